"""AdvDM (Liang et al., ICML 2023) and AdvDM(-) (Xue et al., ICLR 2024, Diff-Protect's sign switch).

PGD on the denoising loss ``L_dm`` of the *pre-trained* model, a fresh random timestep and noise per
step. AdvDM(+) ascends the loss; AdvDM(-) descends it. Defaults from Diff-Protect ``diff_mist.py``
(``epsilon=16``, ``alpha=1``, 100 steps, in [-1, 1] code units with a 2/255 factor): 16/255, 1/255,
with advertorch's uniform random start.
"""

from __future__ import annotations

from .base import Protection, register_protection


@register_protection
class AdvDM(Protection):
    name = "advdm"
    paper = "Liang et al., Adversarial Example Does Good (AdvDM), ICML 2023"
    reference = "xavihart/Diff-Protect code/diff_mist.py"
    eps, alpha, steps = 16 / 255, 1 / 255, 100
    random_start = True
    sign = 1.0

    def objective(self, x, x0, models, gen):
        return self.sign * self.mean_over(models, lambda m: m.loss(x, self.prompt, generator=gen))


@register_protection
class AdvDMMinus(AdvDM):
    name = "advdm-"
    paper = "Xue et al., Toward Effective Protection ... through Score Distillation (AdvDM(-)), ICLR 2024"
    sign = -1.0
