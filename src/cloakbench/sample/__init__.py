"""Sampling: our CFG loop (with an optional extra noise-guidance term) and quality-enhanced sampling (QES)."""

from .sampler import QES_NEGATIVE, SampleConfig, generate, initial_latents, make_scheduler, qes_config

__all__ = ["QES_NEGATIVE", "SampleConfig", "generate", "initial_latents", "make_scheduler", "qes_config"]
