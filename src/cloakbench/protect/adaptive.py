"""Adaptive protection: optimise a protection's objective *through* a purifier (arXiv 2406.18944 §Adaptive).

The paper's adaptive attack is AdvDM-style PGD aimed at CodeSR, 16/255, 6 steps. The gradient goes
through the purifier when it is differentiable (``mode="full"``); otherwise (CodeFormer's detection
and paste-back, JPEG, ...) through BPDA, the purifier in the forward pass and the identity in the
backward pass (Athalye et al. 2018), with EOT over the purifier's randomness (``eot_samples``).
Which mode produced a number is recorded in the config. The step size is not stated in the paper:
4/255 [inf].
"""

from __future__ import annotations

from .base import Protection, create_protection, register_protection


@register_protection
class Adaptive(Protection):
    name = "adaptive"
    paper = "Liu et al., Rethinking and Red-Teaming Protective Perturbation (adaptive attack), arXiv 2406.18944"
    reference = ""  # the paper released no code for its adaptive attack: our reading of its text
    eps, alpha, steps = 16 / 255, 4 / 255, 6
    options = {"base": "advdm", "purifier": "codesr", "mode": "bpda", "purifier_options": {}}

    def __init__(self, **kw):
        super().__init__(**kw)
        from ..purify import create_purifier

        if self.mode not in ("bpda", "full"):
            raise ValueError(f"adaptive mode must be 'bpda' or 'full', not {self.mode!r}")
        self.inner = create_protection(self.base, eps=self.eps, alpha=self.alpha, steps=self.steps, prompt=self.prompt)
        self.purifier_obj = create_purifier(self.purifier, **dict(self.purifier_options))
        if self.mode == "full" and not self.purifier_obj.differentiable:
            raise ValueError(f"purifier {self.purifier!r} is not differentiable: use mode='bpda'")

    def objective(self, x, x0, models, gen):
        purified = self.purifier_obj.bpda(x) if self.mode == "bpda" else self.purifier_obj(x)
        return self.inner.objective(purified, x0, models, gen)
