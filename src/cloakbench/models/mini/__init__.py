"""The mini stack as a model source: the whole paper's model classes at 32 px, offline.

* :mod:`.world`: procedural toys, one subject per attribute combination, with captions.
* :mod:`.nets`: the same classes as the real stack (``CLIPModel``, ``AutoencoderKL``,
  ``UNet2DConditionModel``, ``UNet2DModel``, ``VQModel``, spandrel ``Compact``) scaled down, plus an
  identity encoder for the world.
* :mod:`.stack`: the shipped fp16 weights; ``load_model("mini")``, ``load_clip("mini")``, the ``mini``
  identity backend (``ism[mini]``), ``clip_iqac[mini]``, ``codesr-mini`` and ``gridpure`` with
  ``model: mini`` all load them.
* :mod:`.photos`: world photos written to folders, for everything that reads image folders.

This package imports nothing from training, validation or the demo: those live in
:mod:`cloakbench.minilab`, on top of it.
"""
