"""The mini stack: the whole paper on a laptop, offline, in minutes (arXiv 2406.18944 at 32 px).

* :mod:`.world`: procedural toys, one subject per attribute combination, with captions.
* :mod:`.nets`: the same classes as the real stack (``CLIPModel``, ``AutoencoderKL``,
  ``UNet2DConditionModel``, ``UNet2DModel``, ``VQModel``, spandrel ``Compact``) scaled down, plus an
  identity encoder for the world.
* :mod:`.train`: ``cloakbench mini train``, seeded, under 60 minutes on 2 CPU cores.
* :mod:`.stack`: the shipped fp16 weights; ``load_model("mini")``, ``load_clip("mini")``, the ``mini``
  identity backend (``ism[mini]``), ``clip_iqac[mini]``, ``codesr-mini`` and ``gridpure`` with
  ``model: mini`` all load them.
* :mod:`.demo`: ``cloakbench demo``, the paper's protocol on ``mini-paper.yaml``.
"""
