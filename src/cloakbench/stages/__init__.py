"""The stages of the protocol, written once: the command line and the bench runner both call them.

Each stage reads its inputs, calls the library, writes its outputs and a JSON record into a folder,
and returns the record:

====================  =========================================================  ======================
stage                 writes                                                     record
====================  =========================================================  ======================
:func:`protect`       protected PNGs, ``clean/`` (the crops it protected)        ``protection.json``
:func:`purify`        purified PNGs, at the input size                           ``purification.json``
:func:`class_images`  generated class PNGs (DreamBooth's prior preservation)     (returned only)
:func:`train`         the trained model or LoRA, checkpoints, a log              ``personalized.json``
:func:`sample`        ``p<prompt>-<index>.png``                                  ``sample.json``
:func:`evaluate`      (nothing: returns metric results)                          ``metrics.json`` (by
                                                                                 :func:`write_metrics`)
====================  =========================================================  ======================

Images are float32 ``B x 3 x H x W`` in [0, 1] in memory and lossless 8-bit PNGs on disk; budgets are
measured on the saved PNGs. A stage writes into the folder it is given: the caller chooses it (a
temporary folder beside the final one, moved into place when the stage returns: see
:mod:`cloakbench.stages.output`).
"""

from .evaluation import evaluate, write_metrics
from .protection import protect
from .purification import purify
from .sampling import sample, sample_config
from .training import class_images, train

__all__ = ["class_images", "evaluate", "protect", "purify", "sample", "sample_config", "train", "write_metrics"]
