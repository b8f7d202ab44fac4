"""The mini lab, on top of the mini model source (:mod:`cloakbench.models.mini`) and the core.

* :mod:`.train`: ``cloakbench mini train``, seeded, every model from scratch on 2 CPU cores.
* :mod:`.validate`: ``cloakbench mini validate``, figures on held-out subjects into ``manifest.json``.
* :mod:`.demo`: ``cloakbench demo``, the paper's protocol on ``mini-paper.yaml``.
"""
