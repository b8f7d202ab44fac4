"""FSMG (Fully-trained Surrogate Model Guidance; Van Le et al., Anti-DreamBooth, ICCV 2023).

Fine-tune a DreamBooth surrogate on the clean images (``surrogate_steps``, 1000 in the paper), then
run PGD ascent of ``L_dm`` against that *fixed* model. Defaults from ``attacks/fsmg.py``:
6.375/255 and 0.6375/255 (``pgd_eps=0.05``, ``pgd_alpha=5e-3`` in [-1, 1]), 100 PGD steps.
Targeted (T-FSMG) via ``target_weight``; ensemble (E-FSMG) by passing several models.
"""

from __future__ import annotations

from . import surrogate
from .aspl import ASPL
from .base import register_protection
from .engine import run_pgd


@register_protection
class FSMG(ASPL):
    name = "fsmg"
    paper = "Van Le et al., Anti-DreamBooth (FSMG), ICCV 2023"
    reference = "VinAIResearch/Anti-DreamBooth attacks/fsmg.py"
    eps, alpha, steps = 0.05 * 127.5 / 255, 5e-3 * 127.5 / 255, 100
    options = {"surrogate_steps": 1000, "lr": 5e-7, "prior_weight": 1.0, "clean_images": None, "target": None,
               "target_weight": 0.0}

    def perturb(self, x0, models, gen, *, class_images=None):
        clean = x0 if self.clean_images is None else self.clean_images.to(x0)
        trained = []
        for m in models:
            c = surrogate.clone(m)
            surrogate.train_steps(c, clean, self.prompt, self.surrogate_steps, lr=self.lr, generator=gen,
                                  class_images=class_images, class_prompt=self.class_prompt,
                                  prior_weight=self.prior_weight)
            trained.append(c)
        self.surrogates = trained
        return run_pgd(self.pgd(), x0, lambda x: self.objective(x, x0, trained, gen), generator=gen,
                       transforms=self.transforms, samples=self.eot_samples, callback=self._tick)
