"""BlurCloak: a protection, the worked example of docs/EXTENDING.md.

AdvDM's objective (raise the surrogate's denoising loss on the protected images, Liang et al. 2023) taken
through a Gaussian blur, so that what survives is the low-frequency part a blur would not remove.

Units: images ``B x 3 x H x W`` float32 in [0, 1]; ``eps`` (the L-inf budget) and ``alpha`` (the step of one
update) in [0, 1] units, written k/255; ``sigma`` in pixels. This file says only what to maximise: the
framework's PGD engine takes the ``steps`` sign steps, projects onto the budget, and puts the result on the
8-bit grid so that the saved PNG measures at most ``eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cloakbench.protect.base import Protection


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` (``B x C x H x W``) blurred by a separable Gaussian of ``sigma`` pixels; same shape, differentiable."""
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = (k / k.sum()).repeat(x.shape[1], 1)  # C x (2r + 1): one kernel per channel
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k[:, None, None, :], groups=x.shape[1])  # rows
    return F.conv2d(x, k[:, None, :, None], groups=x.shape[1])  # columns


class BlurCloak(Protection):
    name = "blur-cloak"
    paper = "worked example of docs/EXTENDING.md: AdvDM's loss through a Gaussian blur"
    eps, alpha, steps = 8 / 255, 1 / 255, 50  # defaults; a grid's eps / steps / options.alpha override them
    random_start = True
    options = {"sigma": 1.0}  # this method's own settings (bench YAML: protections[].options)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)  # sets eps, alpha, steps, prompt, ... and self.sigma
        if not float(self.sigma) > 0:
            raise ValueError(f"{self.name}: sigma must be > 0 pixels, got {self.sigma}")

    def objective(self, x, x0, models, gen):
        """The scalar PGD maximises at ``x`` (``x0``: the clean images), averaged over the surrogates."""
        blurred = gaussian_blur(x, float(self.sigma))
        return self.mean_over(models, lambda m: m.loss(blurred, self.prompt, generator=gen))
