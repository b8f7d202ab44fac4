"""DDSPure: diffusion denoised smoothing (Carlini et al., ICLR 2023; DiffShortcut ``defenses/ddspure.py``).

Resize to 256, one-shot denoise at the t where ``alpha_bar_t ~ 1 / (1 + sigma^2)``, resize back.
``units="reference"`` uses sigma = r/255 as DiffShortcut; ``"consistent"`` uses 2r/255, the matching sigma
in [-1, 1] (docs/PROTECTIONS.md §4). ``mode="chain"`` (in :data:`.pixel_diffusion.PAPER_OPTIONS`) is
DiffShortcut's reading: its t as a respaced index of 250 and a reverse chain from there, on [0, 1] inputs,
bicubic resizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .adm import AdmDiffusion
from .base import register_purifier
from .pixel_diffpure import diffpure
from .pixel_diffusion import DEFAULT_PIXEL_MODEL, PixelPurifier, tile_generators


@register_purifier
class DDSPure(PixelPurifier):
    """Diffusion denoised smoothing: resize to ``size``, denoise at the t matching the perturbation size
    (``alpha_bar_t ~ 1 / (1 + sigma^2)``), resize back.

    * ``mode="oneshot"`` (default): one x0 estimate at the nearest original step (argmin of
      ``|alpha_bar - target|`` on the model's schedule), model in [-1, 1]; ``units`` only sets sigma
      (``"reference"``: r/255 as DiffShortcut, ``"consistent"``: 2r/255, the matching sigma in [-1, 1]).
    * ``mode="chain"``: DiffShortcut's ``ddspure.py``. t comes from its rule (:meth:`reference_timestep`,
      ``ddspure.py:96-117``): the 1-based index of the nearest entry of the *1000-step* linear table (r = 11:
      t = 10). With ``respacing`` = 250 (``ddspure.py:16``) that t is a *respaced* index: ``q_sample`` to
      respaced step t (original 4t for t <= 41: 40 for t = 10), then one ``p_sample`` per respaced step
      t .. 1, stopping before 0 (``ddspure.py:119-135``), as :func:`diffpure` with ``t_star = steps = t``;
      ``units="reference"`` feeds [0, 1] (``ddspure.py:53-58``). ``respacing`` = 0: t original steps down
      to 1, then the noiseless step. Each image has its own seeded noise (:func:`tile_generators`, round = iteration).
    * ``interpolation``: ``"bilinear"`` (default: antialiased to ``size``, plain bilinear back) or
      ``"bicubic"`` (antialiased bicubic both ways, clamped: PIL's default ``Image.resize`` filter, which the
      reference uses at ``ddspure.py:167, 169``; within 1/255 of PIL on natural images, which PIL rounds to
      8 bits between its two passes).
    * ``iterations``: denoising rounds at ``size`` (the reference's ``DDSpure(..., iterations=1)``,
      ``ddspure.py:168``; its function default is 10, ``:143``).
    """

    name = "ddspure"
    paper = "Carlini et al., (Certified!!) Adversarial Robustness for Free! (diffusion denoised smoothing), ICLR 2023"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/ddspure.py"
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "radius": 11 / 255, "units": "reference", "size": 256,
               "mode": "oneshot", "respacing": 0, "iterations": 1, "interpolation": "bilinear"}

    def __init__(self, **kw):
        super().__init__(**kw)
        if self.mode not in ("oneshot", "chain"):
            raise ValueError(f"mode must be 'oneshot' or 'chain', not {self.mode!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', not {self.interpolation!r}")
        if self.mode == "oneshot" and int(self.respacing):
            raise ValueError("respacing applies to mode='chain' (the one-shot denoise takes one original step)")

    @staticmethod
    def reference_timestep(target: float, alphas_cumprod: torch.Tensor | None = None) -> int:
        """DiffShortcut's choice of t for ``alpha_bar ~ target`` (``ddspure.py:104-117``) on ``alphas_cumprod``
        (default: the linear 1000-step table, ``ddspure.py:96-102``, the ADM's, float64): of the two entries
        around the target, the nearer (a tie goes to the later one), numbered **from 1**; 1 when the target is
        above the first entry, ``len`` when at or below the last. For r = 11/255 entry 9 (0-based, alpha_bar
        0.998105) is nearest, so t = 10."""
        table = (AdmDiffusion().alphas_cumprod if alphas_cumprod is None else alphas_cumprod).tolist()
        if target > table[0]:
            return 1
        if target <= table[-1]:
            return len(table)
        below = next(i for i, a in enumerate(table) if a < target)  # >= 1: table[0] >= target here
        nearest = below - 1 if table[below - 1] - target < target - table[below] else below
        return nearest + 1

    def timestep(self) -> int:
        sigma = float(self.radius) * (2.0 if self.units == "consistent" else 1.0)
        if self.units not in ("reference", "consistent"):
            raise ValueError(f"units must be 'reference' or 'consistent', not {self.units!r}")
        target = 1.0 / (1.0 + sigma**2)
        if self.mode == "chain":
            return self.reference_timestep(target)
        return int((self.sched.alphas_cumprod - target).abs().argmin())

    def resize(self, x: torch.Tensor, size: tuple[int, int], back: bool) -> torch.Tensor:
        """``x`` to ``size`` with :attr:`interpolation` (``back``: the resize to the input size)."""
        if self.interpolation == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", antialias=not back, align_corners=False)
        if tuple(x.shape[-2:]) == tuple(size):  # PIL returns an unchanged copy
            return x
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)

    @torch.no_grad()
    def purify(self, images):
        h, w = images.shape[-2:]
        t = self.timestep()
        x = self.resize(images, (self.size, self.size), back=False)
        gen = self.generator()
        for it in range(int(self.iterations)):
            if self.mode == "chain":
                gens = tile_generators(self.seed, it, list(range(x.shape[0])))
                x = diffpure(self.unet, self.sched, x, t, t, gens, int(self.respacing), self.units)
            else:
                x = self._oneshot(x, t, gen)
        return self.resize(x, (h, w), back=True).clamp(0, 1)

    def _oneshot(self, x: torch.Tensor, t: int, gen: torch.Generator) -> torch.Tensor:
        dev = next(self.unet.parameters()).device
        z = x.to(dev) * 2 - 1
        a = self.sched.alphas_cumprod[t].to(z)
        noise = torch.randn(z.shape, generator=gen).to(z)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        out = self.unet(zt, torch.full((z.shape[0],), t, device=dev))
        eps = getattr(out, "sample", out)[:, :3]  # an ADM's learned-sigma output: the first 3 channels are eps
        x0 = ((zt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        return ((x0 + 1) / 2).cpu()
