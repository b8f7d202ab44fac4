"""Latent-space purification with Stable Diffusion: LatentDiffPure (SDEdit).

* ``latent-diffpure`` (DiffShortcut ``ldiffp``; Meng et al., SDEdit): VAE-encode, noise the latents to
  ``t = 300`` (t* = 0.3), denoise step by step back to 0 with DDPM and CFG 7.5, prompt "a photo of a
  person, clear, high resolution, high quality, noise-free" (``latent-diffpure-empty``: empty prompt,
  LatentDiffPure-∅). SD v1.4 in the paper; the model id is configuration. ``steps`` respaces the chain
  (default: every step, as the reference).

IMPRESS, the other latent-space purifier, is :mod:`.impress`.
"""

from __future__ import annotations

import torch

from .base import Purifier, register_purifier

CLEAR_PROMPT = "a photo of a person, clear, high resolution, high quality, noise-free"


def sd_model(source, device, dtype=torch.float32):
    """``source`` if it is a loaded :class:`~cloakbench.models.DiffusionModel`, else that model loaded
    (LatentDiffPure and IMPRESS)."""
    from ..models import DiffusionModel, load_model

    return source if isinstance(source, DiffusionModel) else load_model(source, device=device, dtype=dtype)


@register_purifier
class LatentDiffPure(Purifier):
    name = "latent-diffpure"
    paper = "Meng et al., SDEdit, ICLR 2022; LatentDiffPure as in arXiv 2406.18944"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/diffpure_main.py"  # ldiffp.sh, eldiffp.sh
    options = {"model": "CompVis/stable-diffusion-v1-4", "t_star": 300, "steps": None, "guidance": 7.5,
               "prompt": CLEAR_PROMPT}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sd = sd_model(self.model, self.device, self.model_dtype())

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

