"""Loading a diffusers Stable Diffusion pipeline from the Hub (or its local cache, or a local folder) into a
:class:`~cloakbench.models.DiffusionModel`: the one place that loads a ``StableDiffusionPipeline``; :func:`offline`
serves every loader."""

from __future__ import annotations

import os
from pathlib import Path

from diffusers import DDPMScheduler

from ..errors import ModelLoadError
from .bundle import DiffusionModel


def offline() -> bool:
    """Whether the Hub may not be reached (``HF_HUB_OFFLINE``): then models load from the local cache only."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def from_pipeline(pipe, source: str) -> DiffusionModel:
    """The bundle of a loaded ``StableDiffusionPipeline`` (``source``: what it was loaded from, recorded)."""
    # a PNDM config (ours, saved by DiffusionModel.save) has no clip_sample key and DDPM defaults to
    # True, which would clip predicted latents to [-1, 1] in every DDPM step (LatentDiffPure)
    noise_scheduler = DDPMScheduler.from_config({"clip_sample": False, **pipe.scheduler.config})
    return DiffusionModel(
        vae=pipe.vae, unet=pipe.unet, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        noise_scheduler=noise_scheduler, scheduler_config=dict(pipe.scheduler.config), source=source,
    )


def load_hub(name: str, *, revision: str | None = None) -> DiffusionModel:
    """A diffusers model from the Hub by id (from the local cache when offline), in fp32 on the CPU."""
    return load_pretrained(name, name, local_files_only=offline(), revision=revision)


def load_pretrained(name: str, source: str, *, local_files_only: bool, revision: str | None) -> DiffusionModel:
    """``from_pretrained`` of a hub id or local folder ``name``; a :class:`ModelLoadError` that says what to do."""
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
    return from_pipeline(pipe, source)
