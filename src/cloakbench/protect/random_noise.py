"""Random noise at a protection's L-inf budget: the paper's random-noise control (docs/PAPER.md §3, M3).

DiffShortcut (arXiv 2406.18944) states that random noise of the same L-inf size "does not affect
learning", without a table or the noise's distribution; the reference code has no such script. Two
distributions, both drawn directly on the 8-bit grid so the saved PNG measures exactly
``k = floor(255 eps)`` levels (less only where the clean pixel sits at 0 or 255 and the clip bites):

* ``"sign"`` (default): every pixel and channel ``+-k/255`` with probability 1/2. Sign-PGD protections
  end with most pixels at ``+-eps``, so random signs match the protection in L-inf *and* roughly in
  L2 energy; only the structure differs, which is what the shortcut hypothesis is about.
* ``"uniform"``: integers uniform in ``[-k, k]`` (the 8-bit form of U[-eps, eps], the uniform random
  start of PGD); about ``1/sqrt(3)`` of the sign noise's L2 energy.

No surrogate model is queried (one is accepted and ignored, so the control runs through every path a
protection does: ``cloakbench protect``, the bench grid's protect stage).
"""

from __future__ import annotations

import math

import torch

from .base import Protection, register_protection

DISTRIBUTIONS = ("sign", "uniform")


def random_noise(x0: torch.Tensor, eps: float, distribution: str = "sign",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x0`` (``B x 3 x H x W`` on the 8-bit grid, [0, 1]) plus i.i.d. noise of L-inf ``floor(255 eps)/255``,
    clipped to [0, 1]; returns the same shape on the 8-bit grid. ``distribution``: ``sign`` or ``uniform``."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"random-noise: distribution must be one of {', '.join(DISTRIBUTIONS)}, not {distribution!r}")
    k = math.floor(eps * 255 + 1e-6)
    if k < 1:
        raise ValueError(f"random-noise: eps {eps:.5f} is under one 8-bit level (1/255)")
    if distribution == "sign":
        levels = torch.randint(0, 2, x0.shape, generator=generator) * 2 - 1
        levels = levels * k
    else:
        levels = torch.randint(-k, k + 1, x0.shape, generator=generator)
    x0_255 = (x0.detach().double() * 255).round()
    return ((x0_255 + levels.to(x0_255)).clamp(0, 255) / 255).to(x0.dtype)


@register_protection
class RandomNoise(Protection):
    name = "random-noise"
    paper = "random-noise control of DiffShortcut (arXiv 2406.18944, docs/PAPER.md §3 M3); not a protection"
    reference = ""  # our own control: the reference code has no such script
    eps, steps = 8 / 255, 1
    options = {"distribution": "sign"}

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.norm != "linf":
            raise ValueError(f"random-noise: only the L-inf budget is defined, not norm={self.norm!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"random-noise: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                             f"not {self.distribution!r}")

    def perturb(self, x0, models, gen, *, class_images=None):
        """One draw of :func:`random_noise` from the protection's seeded generator."""
        out = random_noise(x0.cpu(), self.eps, self.distribution, gen).to(x0)
        self._tick()
        return out
