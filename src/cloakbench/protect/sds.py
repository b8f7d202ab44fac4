"""SDS(+), SDS(-) and SDST (Xue et al., Toward Effective Protection against Diffusion-based Mimicry
through Score Distillation, ICLR 2024; ``xavihart/Diff-Protect`` ``attacks.py::pgd_sds``).

The gradient of ``L_dm`` with the UNet Jacobian dropped: ``g = J_E(x)^T (eps_theta(z_t, t, c) - eps)``,
back-propagated through the encoder only (about half the memory and twice the speed of AdvDM).
SDS(+) ascends, SDS(-) descends (reported stronger). SDST adds the textural target term and steps
along ``sign(g_dir * target_rate * g - grad ||E(x) - z_target||^2)`` (``target_rate=5``). Defaults:
16/255, 1/255, 100 steps, no random start.
"""

from __future__ import annotations

import torch

from .base import Protection, register_protection
from .targets import load_target


def sds_surrogate(model, x, prompt, gen) -> torch.Tensor:
    """A scalar whose gradient w.r.t. ``x`` is ``J_E^T (eps_hat - eps)`` (the UNet output detached)."""
    z = model.encode(x, generator=gen)
    with torch.no_grad():
        terms = model.denoise_terms(None, prompt, generator=gen, latents=z.detach())
    return ((terms["pred"] - terms["target"]).detach().float() * z.float()).sum()


def textural(model, x, target) -> torch.Tensor:
    """Summed squared distance of the (sampled-free) latents of ``x`` and the target (Mist's L_tex)."""
    return (model.encode(x, sample=False).float() - model.encode(target, sample=False).detach().float()).pow(2).sum()


@register_protection
class SDSPlus(Protection):
    name = "sds+"
    paper = "Xue et al., Score Distillation protection SDS(+), ICLR 2024"
    reference = "xavihart/Diff-Protect code/diff_mist.py"  # mode=sds (code/attacks.py::pgd_sds)
    eps, alpha, steps = 16 / 255, 1 / 255, 100
    g_dir = 1.0
    options = {"target": None, "target_rate": 5.0, "using_target": False}

    def objective(self, x, x0, models, gen):
        def one(m):
            val = self.g_dir * (self.target_rate if self.using_target else 1.0) * sds_surrogate(m, x, self.prompt, gen)
            if self.using_target:
                val = val - textural(m, x, load_target(self.target, x))
            return val

        return self.mean_over(models, one)

    @torch.no_grad()
    def evaluate(self, x, x0, model, *, seed=1234, draws=8):
        """Measured objective: ``g_dir * L_dm`` (minus the scaled textural distance for SDST)."""
        models = [model] if not isinstance(model, (list, tuple)) else list(model)
        total = 0.0
        for d in range(draws):
            gen = torch.Generator().manual_seed(seed + d)
            for m in models:
                v = self.g_dir * float(m.loss(x.to(m.device), self.prompt, generator=gen))
                if self.using_target:
                    v -= float(textural(m, x.to(m.device), load_target(self.target, x.to(m.device)))) / x[0].numel()
                total += v / len(models)
        return total / draws


@register_protection
class SDSMinus(SDSPlus):
    name = "sds-"
    paper = "Xue et al., Score Distillation protection SDS(-), ICLR 2024"
    g_dir = -1.0


@register_protection
class SDST(SDSMinus):
    name = "sdst"
    paper = "Xue et al., Score Distillation protection SDST (SDS(-) + textural target), ICLR 2024"
    options = {**SDSPlus.options, "using_target": True}
