"""The ``DiffusionModel`` bundle: the latent diffusion model every stage works on.

It holds the Stable Diffusion components (VAE, UNet, text encoder, tokenizer, training noise
scheduler and the sampling scheduler's config) and knows its own loss, so protections, training and
analysis only call ``encode`` / ``decode`` / ``encode_prompt`` / ``loss`` (the diffusers lesson:
"the model bundle knows its loss; algorithms only call it").

Units: images are ``B x 3 x H x W`` float in [0, 1]; latents are ``B x 4 x H/f x W/f`` already
multiplied by the VAE scaling factor (``f`` = VAE downsampling, 8 for SD, 2 for the tiny model).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer
from ..fsmode import as_umask

log = logging.getLogger(__name__)

Prompts = str | Sequence[str] | torch.Tensor


@dataclass(eq=False)
class DiffusionModel:
    """A Stable-Diffusion-style latent diffusion model (SD 1.x / 2.x layout).

    ``noise_scheduler`` is a ``DDPMScheduler`` used for training losses (as diffusers' DreamBooth
    script); ``scheduler_config`` is the saved sampling scheduler's config (PNDM for SD 2.1-base).
    Parameters are frozen (``requires_grad=False``) and in eval mode after construction; trainers
    unfreeze what they train. ``source`` records where the weights came from.
    """

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        for module in (self.vae, self.unet, self.text_encoder):
            module.requires_grad_(False)
            module.eval()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the UNet and text encoder (the VAE may be kept in fp32)."""
        return next(self.unet.parameters()).dtype

    @property
    def prediction_type(self) -> str:
        """``"epsilon"`` (SD 1.x, 2.x-base) or ``"v_prediction"`` (SD 2.x-768)."""
        return str(self.noise_scheduler.config.prediction_type)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Native image size in pixels (UNet sample size x VAE factor): 512 for SD 2.1-base."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "DiffusionModel":
        """Move to ``device``; cast UNet and text encoder to ``dtype`` (the VAE stays fp32 unless bf16)."""
        vae_dtype = dtype if dtype in (None, torch.float32, torch.bfloat16) else torch.float32
        for module, want in ((self.unet, dtype), (self.text_encoder, dtype), (self.vae, vae_dtype)):
            current = next(module.parameters()).dtype
            if want in (None, current):
                module.to(device=device)
            else:
                module.to(device=device, dtype=want)
        return self

    # ------------------------------------------------------------------ VAE
    def encode(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """Images ``B x 3 x H x W`` in [0, 1] -> scaled latents ``B x 4 x H/f x W/f``.

        ``sample=True`` draws from the VAE posterior (with ``generator``), as training does;
        ``sample=False`` takes its mean. Differentiable w.r.t. ``images``.
        """
        dist = self._latent_dist(images)
        latents = dist.sample(generator=generator) if sample else dist.mode()
        shift, scale = self._latent_units()
        return ((latents - shift) * scale).to(self.dtype)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the VAE posterior of ``images`` (``B x 3 x H x W`` in [0, 1]), each
        ``B x 4 x H/f x W/f`` in the scaled units of :meth:`encode`: a draw is ``mean + std * N(0, I)``."""
        dist = self._latent_dist(images)
        shift, scale = self._latent_units()
        return ((dist.mean - shift) * scale).to(self.dtype), (dist.std * scale).to(self.dtype)

    def _latent_dist(self, images: torch.Tensor):
        vae_param = next(self.vae.parameters())
        return self.vae.encode(images.to(device=vae_param.device, dtype=vae_param.dtype) * 2.0 - 1.0).latent_dist

    def _latent_units(self) -> tuple[float, float]:
        """``(shift, scale)``: scaled latents are ``(z - shift) * scale`` (SD: shift 0, scale 0.18215)."""
        return getattr(self.vae.config, "shift_factor", None) or 0.0, self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images ``B x 3 x H x W`` in [0, 1] (clamped). Differentiable."""
        vae_param = next(self.vae.parameters())
        shift, scale = self._latent_units()
        z = latents.to(device=vae_param.device, dtype=vae_param.dtype) / scale + shift
        return ((self.vae.decode(z).sample + 1.0) / 2.0).clamp(0.0, 1.0).float()

    # ------------------------------------------------------------------ text
    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> ``B x 77`` token ids (padded to the max length, truncated), on the model device."""
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids
        return ids.to(self.device)

    def encode_prompt(self, prompts: Prompts, batch_size: int | None = None) -> torch.Tensor:
        """Prompts -> text-encoder hidden states ``B x 77 x D`` (last layer, as diffusers' SD pipeline).

        A single string is repeated ``batch_size`` times; a tensor is taken as ready embeddings.
        """
        if isinstance(prompts, torch.Tensor):
            return prompts.to(device=self.device, dtype=self.dtype)
        if isinstance(prompts, str):
            prompts = [prompts] * (batch_size or 1)
        ids = self.tokenize(prompts)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = (ids != self.tokenizer.pad_token_id).long()
        return self.text_encoder(ids, attention_mask=mask)[0].to(self.dtype)

    # ------------------------------------------------------------------ loss
    def denoise_terms(
        self,
        images: torch.Tensor | None,
        prompts: Prompts,
        timesteps: torch.Tensor | int | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        latents: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One training-style forward pass: latents, noise, timesteps, noisy latents, prediction, target.

        ``images`` ``B x 3 x H x W`` in [0, 1] (or ready scaled ``latents``). Timesteps are drawn
        uniformly from ``[0, T)`` and noise from N(0, I) with ``generator`` when not given. The target
        is the noise (epsilon-prediction) or the velocity (v-prediction).
        """
        if latents is None:
            if images is None:
                raise ValueError("denoise_terms needs images or latents")
            latents = self.encode(images, generator=generator)
        b = latents.shape[0]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if noise is None:
            noise = torch.randn(latents.shape, generator=generator, device=gen_device, dtype=torch.float32)
        noise = noise.to(device=latents.device, dtype=latents.dtype)
        if timesteps is None:
            timesteps = torch.randint(0, self.num_train_timesteps, (b,), generator=generator, device=gen_device)
        elif isinstance(timesteps, int):
            timesteps = torch.full((b,), timesteps, dtype=torch.long)
        timesteps = timesteps.to(latents.device).long()
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        cond = self.encode_prompt(prompts, batch_size=b)
        if cond.shape[0] == 1 and b > 1:
            cond = cond.expand(b, -1, -1)
        pred = self.unet(noisy, timesteps, encoder_hidden_states=cond).sample
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        return {"latents": latents, "noise": noise, "timesteps": timesteps, "noisy": noisy, "pred": pred,
                "target": target, "cond": cond}

    def loss(
        self,
        images: torch.Tensor | None,
        prompts: Prompts,
        timesteps: torch.Tensor | int | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        latents: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """The denoising MSE of training and of every protection (Ho et al. 2020; Rombach et al. 2022).

        ``images`` ``B x 3 x H x W`` in [0, 1] (ignored when ``latents`` are given). The same
        generator seed gives the same value. ``reduction="none"`` returns one value per image.
        Gradients flow to ``images``.
        """
        t = self.denoise_terms(images, prompts, timesteps, noise, generator, latents=latents)
        per = F.mse_loss(t["pred"].float(), t["target"].float(), reduction="none").flatten(1).mean(1)
        if reduction == "none":
            return per
        if reduction == "mean":
            return per.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")

    def predict_x0(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predicted clean latents from :meth:`denoise_terms` output (epsilon or v parameterisation)."""
        a = self.noise_scheduler.alphas_cumprod.to(terms["noisy"].device)[terms["timesteps"]].view(-1, 1, 1, 1)
        a = a.to(terms["noisy"].dtype)
        if self.prediction_type == "epsilon":
            return (terms["noisy"] - (1 - a).sqrt() * terms["pred"]) / a.sqrt()
        return a.sqrt() * terms["noisy"] - (1 - a).sqrt() * terms["pred"]

    # ------------------------------------------------------------------ saving
    def to_pipeline(self):  # -> diffusers.StableDiffusionPipeline
        """A diffusers ``StableDiffusionPipeline`` sharing these modules (no safety checker)."""
        import diffusers
        from diffusers import PNDMScheduler, StableDiffusionPipeline

        cfg = dict(self.scheduler_config or self.noise_scheduler.config)
        cls = getattr(diffusers, str(cfg.get("_class_name", "")), None) or PNDMScheduler
        return StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=cls.from_config(cfg), safety_checker=None, feature_extractor=None,
            image_encoder=None, requires_safety_checker=False,
        )

    def save(self, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> Path:
        """Save as a diffusers folder (safetensors) plus ``cloakbench.json`` provenance, atomically.

        The folder is written under a temp name and renamed, so a crash never leaves a half model.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        as_umask(tmp, directory=True)
        try:
            self.to_pipeline().save_pretrained(tmp, safe_serialization=True)
            meta = {"source": self.source, "prediction_type": self.prediction_type, **(extra or {})}
            (tmp / "cloakbench.json").write_text(json.dumps(meta, indent=2, default=str))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
