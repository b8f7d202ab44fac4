"""Mist (Liang & Wu, 2023; ``psyker-team/mist`` ``mist_v3.py``, fused mode 2).

Fuse the semantic loss (AdvDM's ``L_dm``, ascended) with the textural loss (summed squared distance
of the VAE latents to those of a target image, descended): maximise ``rate * L_dm - L_tex`` with
``rate = 1e4`` (``10^(rate+3)``, ``--rate 1``). Defaults as Diff-Protect's ``mode=mist``: 16/255,
1/255, 100 steps, uniform random start. The reference target ``MIST.png`` is not redistributed:
pass its path as ``target``; the default is our procedural texture.
"""

from __future__ import annotations

from .base import Protection, register_protection
from .sds import textural
from .targets import load_target


@register_protection
class Mist(Protection):
    name = "mist"
    paper = "Liang et al., Mist: Towards Improved Adversarial Examples for Diffusion Models, 2023"
    reference = "xavihart/Diff-Protect code/diff_mist.py"  # mode=mist (psyker-team/mist mist_v3.py: its loss)
    eps, alpha, steps = 16 / 255, 1 / 255, 100
    random_start = True
    options = {"target": None, "rate": 1e4}

    def objective(self, x, x0, models, gen):
        target = load_target(self.target, x)
        return self.mean_over(models, lambda m: self.rate * m.loss(x, self.prompt, generator=gen) - textural(m, x, target))
