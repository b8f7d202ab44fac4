"""Sampling: our CFG loop (with an optional extra noise-guidance term), quality-enhanced sampling (QES), and
the class images of DreamBooth's prior preservation."""

from .class_images import prepare_class_images
from .sampler import (
           QES_NEGATIVE,
           SampleConfig,
           generate,
           initial_latents,
           make_scheduler,
           qes_config,
)

__all__ = ["QES_NEGATIVE", "SampleConfig", "generate", "initial_latents", "make_scheduler", "prepare_class_images",
           "qes_config"]
