"""Personalization: DreamBooth / LoRA fine-tuning of a DiffusionModel, with CDL prompts (arXiv 2406.18944)."""

from .cdl import CDLPolicy, add_token
from .dreambooth import DreamBoothTrainer, TrainConfig, load_personalized, trained_cdl
from .loss import dreambooth_loss

__all__ = ["CDLPolicy", "DreamBoothTrainer", "TrainConfig", "add_token", "dreambooth_loss", "load_personalized",
           "trained_cdl"]
