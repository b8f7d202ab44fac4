"""Personalization: DreamBooth / LoRA fine-tuning (with CDL prompts) of a DiffusionModel."""

from .loss import dreambooth_loss

__all__ = ["dreambooth_loss"]
