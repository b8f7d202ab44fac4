"""Diffusion model bundle, the CLIP wrapper, loading (:func:`load_model`, :func:`load_clip`), tiny test
models and device choice."""

from .bundle import DiffusionModel
from .device import parse_dtype, pick_device
from .loading import DEFAULT_MODEL, ModelLoadError, load_clip, load_model
from .sources import MODELS, ModelSource
from .tiny import build_tiny

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSource", "DiffusionModel", "ModelLoadError", "build_tiny", "load_clip", "load_model", "parse_dtype", "pick_device"]
