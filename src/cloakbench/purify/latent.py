"""Latent-space purification with Stable Diffusion: LatentDiffPure (SDEdit) and IMPRESS.

* ``latent-diffpure`` (DiffShortcut ``ldiffp``; Meng et al., SDEdit): VAE-encode, noise the latents to
  ``t = 300`` (t* = 0.3), denoise step by step back to 0 with DDPM and CFG 7.5, prompt "a photo of a
  person, clear, high resolution, high quality, noise-free" (``latent-diffpure-empty``: empty prompt,
  LatentDiffPure-∅). SD v1.4 in the paper; the model id is configuration. ``steps`` respaces the chain
  (default: every step, as the reference).
* ``impress`` (Cao et al., NeurIPS 2023): optimise x to be a fixed point of the VAE while staying
  perceptually close to the input: ``MSE(D(E(x)), x) + 0.1 * max(P(x, x_adv) - 0.1, 0)``, init
  ``x_adv + N(0, 0.05^2)`` ([0, 1] units; 0.1 in [-1, 1]), Adam lr 0.01 with cosine decay to 1e-5,
  3000 iterations, SD 2.1-base VAE. ``P`` is LPIPS-VGG (needs the ``lpips`` package and weights) or
  ``ssim`` (1 - SSIM, offline; a documented substitute).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models import DEFAULT_MODEL
from .base import Purifier, register_purifier

CLEAR_PROMPT = "a photo of a person, clear, high resolution, high quality, noise-free"


def _model(source, device, dtype=torch.float32):
    from ..models import DiffusionModel, load_model

    return source if isinstance(source, DiffusionModel) else load_model(source, device=device, dtype=dtype)


@register_purifier
class LatentDiffPure(Purifier):
    name = "latent-diffpure"
    paper = "Meng et al., SDEdit, ICLR 2022; LatentDiffPure as in arXiv 2406.18944"
    options = {"model": "CompVis/stable-diffusion-v1-4", "t_star": 300, "steps": None, "guidance": 7.5,
               "prompt": CLEAR_PROMPT}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sd = _model(self.model, self.device, self.model_dtype())

    @torch.no_grad()
    def purify(self, images):
        from diffusers import DDPMScheduler

        m, gen = self.sd, self.generator()
        s = DDPMScheduler.from_config(m.noise_scheduler.config)
        n = int(self.steps or self.t_star + 1)
        ts = torch.linspace(self.t_star, 0, n).round().long().unique_consecutive().tolist()
        s.set_timesteps(timesteps=ts)
        out = []
        for img in images:
            z = m.encode(img[None].to(m.device), generator=gen)
            z = s.add_noise(z, torch.randn(z.shape, generator=gen).to(z), torch.tensor([ts[0]], device=z.device))
            cond = torch.cat([m.encode_prompt(""), m.encode_prompt(self.prompt)])
            for t in s.timesteps:
                e = m.unet(torch.cat([z, z]), t, encoder_hidden_states=cond).sample
                eu, ec = e.chunk(2)
                z = s.step(eu + self.guidance * (ec - eu), t, z, generator=gen).prev_sample
            out.append(m.decode(z).cpu()[0])
        return torch.stack(out)


@register_purifier
class LatentDiffPureEmpty(LatentDiffPure):
    name = "latent-diffpure-empty"
    paper = "LatentDiffPure with an empty prompt (LatentDiffPure-∅), arXiv 2406.18944"
    options = {**LatentDiffPure.options, "prompt": ""}


@register_purifier
class IMPRESS(Purifier):
    name = "impress"
    paper = "Cao et al., IMPRESS: Evaluating the Resilience of Imperceptible Perturbations Against Unauthorized Data Usage, NeurIPS 2023"
    differentiable = False
    options = {"model": DEFAULT_MODEL, "iters": 3000, "lr": 0.01, "lr_min": 1e-5, "weight": 0.1, "bound": 0.1,
               "init_sigma": 0.05, "perceptual": "lpips"}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sd = _model(self.model, self.device)
        if self.perceptual == "lpips":
            try:
                import lpips
            except ImportError as exc:
                raise ImportError("IMPRESS's LPIPS-VGG term needs `pip install lpips` and its VGG weights; "
                                  "or pass perceptual='ssim' (offline substitute)") from exc
            self.lpips = lpips.LPIPS(net="vgg", verbose=False).eval().to(self.sd.device)
        elif self.perceptual != "ssim":
            raise ValueError(f"perceptual must be 'lpips' or 'ssim', not {self.perceptual!r}")

    def distance(self, x, ref):
        if self.perceptual == "lpips":
            return self.lpips(x * 2 - 1, ref * 2 - 1).flatten()
        from ..metrics.fidelity import ssim

        return 1 - ssim(x, ref)

    def purify(self, images):
        m = self.sd
        ref = images.to(m.device)
        x = (ref + self.init_sigma * torch.randn(ref.shape, generator=self.generator()).to(ref)).clamp(0, 1)
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        n = int(self.iters)
        for i in range(n):
            for g in opt.param_groups:
                g["lr"] = self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * i / max(1, n)))
            recon = m.decode(m.encode(x, sample=False))
            loss = F.mse_loss(recon, x) + self.weight * torch.relu(self.distance(x, ref) - self.bound).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        return x.detach().cpu()
