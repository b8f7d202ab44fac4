"""IMPRESS (Cao et al., NeurIPS 2023; DiffShortcut ``defenses/impress.py``): latent-space purification with a
Stable Diffusion VAE.

``impress``: optimise x to be a fixed point of the VAE while staying perceptually close to the input:
``MSE(D(E(x)), x) + 0.1 * max(P(x, x_adv) - 0.1, 0)``, init ``x_adv + N(0, 0.05^2)`` ([0, 1] units; 0.1 in
[-1, 1]), Adam lr 0.01 with cosine decay to 1e-5, 3000 iterations, SD 2.1-base VAE. ``P`` is LPIPS-VGG (needs
the ``lpips`` package and weights) or ``ssim`` (1 - SSIM, offline; a documented substitute).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models import DEFAULT_MODEL
from .base import Purifier, register_purifier
from .latent_diffpure import sd_model


@register_purifier
class IMPRESS(Purifier):
    name = "impress"
    paper = "Cao et al., IMPRESS: Evaluating the Resilience of Imperceptible Perturbations Against Unauthorized Data Usage, NeurIPS 2023"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/impress.py"  # vendors AAAAAAsuka/Impress
    requires = ("lpips",)  # perceptual="lpips" (the default); "ssim" needs nothing
    differentiable = False
    options = {"model": DEFAULT_MODEL, "iters": 3000, "lr": 0.01, "lr_min": 1e-5, "weight": 0.1, "bound": 0.1,
               "init_sigma": 0.05, "perceptual": "lpips"}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sd = sd_model(self.model, self.device)
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
