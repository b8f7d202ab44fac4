"""The one attack engine: projected gradient steps in [0, 1] units, with EOT and 8-bit finalisation.

Every protection is a projected gradient method (Madry et al. 2018) on some objective of the image:
``x <- Proj_{||x - x0|| <= eps}(x + alpha * step(grad))`` then clamp to [0, 1], where ``step`` is the
sign (L-inf) or the L2-normalised gradient. The objective is always *maximised*: untargeted
protections return a loss, targeted ones return minus a distance. Expectation over transformations
(EOT; Athalye et al. 2018) averages the gradient over random differentiable transforms.

:func:`finalize` puts the result on the 8-bit grid *inside* the budget, so the saved PNG measures
at most ``eps`` against the 8-bit clean image (docs/PROTECTIONS.md §0: budgets are checked after saving).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class PGD:
    """Projected gradient steps. ``eps`` / ``alpha`` in [0, 1] units (L2: totals over C x H x W).

    ``step="sign"`` (L-inf default) or ``"normalized"`` (gradient / its per-image L2 norm);
    ``random_start`` draws a uniform start in the L-inf ball (or a scaled Gaussian direction for L2);
    ``decay=True`` decays the step size linearly from ``alpha`` to ``decay_to * alpha`` over ``steps``
    (PhotoGuard: ``decay_to=0.01``, MadryLab/photoguard img2img notebook, ``step_size / 100``).
    """

    eps: float
    alpha: float
    steps: int
    norm: str = "linf"
    step: str = "sign"
    random_start: bool = False
    decay: bool = False
    decay_to: float = 0.0

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', not {self.norm!r}")
        if self.step not in ("sign", "normalized"):
            raise ValueError(f"step must be 'sign' or 'normalized', not {self.step!r}")
        if not self.eps > 0 or self.alpha <= 0 or self.steps < 0:
            raise ValueError(f"need eps > 0, alpha > 0, steps >= 0; got {self.eps}, {self.alpha}, {self.steps}")

    def start(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The starting point: ``x0`` or a uniform / Gaussian random start inside the ball."""
        if not self.random_start:
            return x0.clone()
        u = torch.rand(x0.shape, generator=generator, dtype=torch.float32).to(x0)
        if self.norm == "linf":
            delta = (2 * u - 1) * self.eps
        else:
            g = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0)
            delta = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * self.eps * u.flatten(1)[:, :1].view(-1, 1, 1, 1)
        return self.project(x0 + delta, x0)

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Into the eps-ball around ``x0`` and the valid range [0, 1]."""
        delta = x - x0
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta * (self.eps / n).clamp(max=1.0)
        return (x0 + delta).clamp(0.0, 1.0)

    def update(self, x: torch.Tensor, x0: torch.Tensor, grad: torch.Tensor, i: int = 0) -> torch.Tensor:
        """One ascent step along ``grad`` (step ``i`` of ``steps``, for the decay), then projection."""
        alpha = self.alpha * (1 - (1 - self.decay_to) * i / max(1, self.steps)) if self.decay else self.alpha
        if self.step == "sign":
            direction = grad.sign()
        else:
            direction = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return self.project(x.detach() + alpha * direction, x0)


def gradient(
    x: torch.Tensor,
    objective: Objective,
    *,
    transforms: Sequence[Transform] = (),
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Gradient of ``objective`` at ``x`` and the mean objective, averaged over ``samples`` draws.

    Each draw samples the transforms (EOT) and the objective's own randomness (timesteps, noise,
    a purifier's noise) from ``generator``.
    """
    total = torch.zeros_like(x)
    value = 0.0
    n = max(1, samples)
    for _ in range(n):
        xi = x.detach().clone().requires_grad_(True)
        xt = xi
        for t in transforms:
            xt = t(xt, generator)
        obj = objective(xt)
        (g,) = torch.autograd.grad(obj, xi)
        total += g
        value += float(obj.detach())
    return total / n, value / n


def run_pgd(
    pgd: PGD,
    x0: torch.Tensor,
    objective: Objective,
    *,
    generator: torch.Generator | None = None,
    transforms: Sequence[Transform] = (),
    samples: int = 1,
    callback: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """The plain loop: start, then ``pgd.steps`` ascent steps on ``objective``."""
    x = pgd.start(x0, generator)
    for i in range(pgd.steps):
        g, value = gradient(x, objective, transforms=transforms, samples=samples, generator=generator)
        x = pgd.update(x, x0, g, i)
        if callback is not None:
            callback(i, value)
    return x.detach()


def finalize(x: torch.Tensor, x0: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Put ``x`` on the 8-bit grid within the budget of the 8-bit clean ``x0``.

    L-inf: the delta is rounded to the nearest 1/255 and clipped to ``floor(255 eps)/255``.
    L2: the delta is rounded toward zero (never increasing any coordinate), so its norm stays <= eps.
    Either way the saved file measures <= eps exactly.
    """
    x0_255 = (x0.detach().double() * 255).round()
    d255 = (x.detach().double() * 255) - x0_255
    if norm == "linf":
        k = math.floor(eps * 255 + 1e-6)
        d255 = d255.round().clamp(-k, k)
    else:
        d255 = d255.trunc()
    out = (x0_255 + d255).clamp(0, 255)
    return (out / 255).to(x.dtype)
