"""The shipped mini weights: save, load, and view them as the full stack's objects.

Weights live in ``cloakbench/models/mini/shipped/`` (fp16 safetensors, one file per model, and
``manifest.json`` with the training config, timings and validation figures). The architectures are
rebuilt in code (:mod:`cloakbench.models.mini.nets`) and loaded in fp32, so ``--model mini`` goes through the
same :class:`~cloakbench.models.DiffusionModel` bundle, the same :class:`~cloakbench.models.clip.Clip`
wrapper, the same spandrel loader and the same diffusers pixel-DDPM path as real models.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import MiniWeightsError
from . import nets

SHIPPED = Path(__file__).parent / "shipped"
PARTS = ("clip", "vae", "unet", "pixel", "vq", "sr", "identity")


def weights_dir() -> Path:
    """``$CLOAKBENCH_MINI_WEIGHTS`` or the shipped folder."""
    return Path(os.environ.get("CLOAKBENCH_MINI_WEIGHTS", SHIPPED))


def save_all(models: dict[str, torch.nn.Module], out: str | Path, manifest: dict) -> None:
    """Write each model's state dict as fp16 safetensors and the manifest, atomic per *folder*: everything is
    written beside ``out`` and swapped in whole (:func:`cloakbench.fsmode.staged`), so a kill leaves the old
    folder or the new one, never a mix of two runs' models (#37 item 5). A folder that holds files other than
    mini weights is refused, never replaced."""
    from safetensors.torch import save_file

    from ...errors import InputError
    from ...fsmode import staged

    out = Path(out)
    mine = {f"{n}.safetensors" for n in PARTS} | {"manifest.json"}
    if out.is_dir() and (other := sorted(p.name for p in out.iterdir() if p.name not in mine)):
        raise InputError(f"{out} holds {', '.join(other[:4])}: not a mini weights folder; give a new or empty folder")
    extra = {"vae_scaling_factor": float(models["vae"].config.scaling_factor)}
    with staged(out) as work:
        for name in PARTS:
            sd = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                  for k, v in models[name].state_dict().items()}
            save_file(sd, str(work / f"{name}.safetensors"))
        (work / "manifest.json").write_text(json.dumps({**manifest, **extra}, indent=2))


def _load(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    if not path.is_file():
        raise MiniWeightsError(f"mini weight file {path} is missing: run `cloakbench mini train --out {path.parent}` "
                               "(80-100 min on 2 CPU cores) or reinstall cloakbench")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    module.load_state_dict(sd)
    return module.float().eval().requires_grad_(False)


@dataclass
class MiniStack:
    """All mini models, fp32 on CPU, frozen."""

    clip: object  # cloakbench.models.clip.Clip
    vae: torch.nn.Module
    unet: torch.nn.Module
    pixel: torch.nn.Module
    vq: torch.nn.Module
    sr: torch.nn.Module
    identity: torch.nn.Module
    manifest: dict
    folder: Path

    @classmethod
    def load(cls, folder: str | Path | None = None) -> MiniStack:
        from ..clip import Clip

        folder = Path(folder) if folder is not None else weights_dir()
        if not (folder / "manifest.json").is_file():
            raise MiniWeightsError(f"no mini weights in {folder} (manifest.json missing): run `cloakbench mini train "
                                   f"--out {folder}` (80-100 min on 2 CPU cores) or reinstall cloakbench")
        manifest = json.loads((folder / "manifest.json").read_text())
        vae = _load(nets.build_vae(), folder / "vae.safetensors")
        vae.register_to_config(scaling_factor=manifest["vae_scaling_factor"])
        return cls(
            clip=Clip(_load(nets.build_clip(), folder / "clip.safetensors"), source="mini"),
            vae=vae, unet=_load(nets.build_unet(), folder / "unet.safetensors"),
            pixel=_load(nets.build_pixel_unet(), folder / "pixel.safetensors"),
            vq=_load(nets.build_vq(), folder / "vq.safetensors"), sr=_load(nets.build_sr(), folder / "sr.safetensors"),
            identity=_load(nets.build_identity(), folder / "identity.safetensors"), manifest=manifest, folder=folder,
        )

    def diffusion_model(self):
        """A fresh :class:`DiffusionModel` (own copies of VAE, UNet and text tower: trainers may modify it)."""
        import copy

        from diffusers import DDPMScheduler, PNDMScheduler

        from ..bundle import DiffusionModel
        from ..tiny import SD_BETAS
        from ..tokenizer import clip_tokenizer

        pt = self.manifest.get("prediction_type", "epsilon")  # a manifest without the key: epsilon
        sampler = PNDMScheduler(**SD_BETAS, prediction_type=pt, skip_prk_steps=True, set_alpha_to_one=False,
                                steps_offset=1)
        return DiffusionModel(
            vae=copy.deepcopy(self.vae), unet=copy.deepcopy(self.unet), text_encoder=nets.text_encoder_from(self.clip.model),
            tokenizer=clip_tokenizer(), noise_scheduler=DDPMScheduler(**SD_BETAS, prediction_type=pt, clip_sample=False),
            scheduler_config=dict(sampler.config), source=f"mini:{self.folder}",
        )

    def pixel_model(self):
        """``(UNet2DModel, DDPMScheduler)`` for pixel DiffPure / GrIDPure on 16 px tiles."""
        from diffusers import DDPMScheduler

        return self.pixel, DDPMScheduler(num_train_timesteps=1000)


@functools.lru_cache(maxsize=2)
def load_stack(folder: str | None = None) -> MiniStack:
    """Cached :meth:`MiniStack.load` (components are frozen; :meth:`MiniStack.diffusion_model` copies)."""
    return MiniStack.load(folder)
