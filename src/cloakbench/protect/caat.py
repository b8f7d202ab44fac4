"""CAAT, Cross-Attention Adversarial Training (Xu et al., CVPR 2024; ``CO2-cityao/CAAT``).

Each step computes the denoising loss on the batch once and uses it twice: a sign-ascent step on the
images, and an AdamW descent step (lr 1e-5) on the cross-attention key / value projections
(``attn2.to_k``, ``attn2.to_v``; Custom Diffusion's ``crossattn_kv``) of a copy of the UNet.
Defaults from ``scripts/train_CAAT.sh``: ``pgd_eps=0.05``, ``pgd_alpha=5e-3`` in [-1, 1] (6.375/255,
0.6375/255), 250 steps, no random start, no prior preservation (the reference's prior path feeds no
class images).
"""

from __future__ import annotations

import torch

from . import surrogate
from .base import Protection, register_protection


@register_protection
class CAAT(Protection):
    name = "caat"
    paper = "Xu et al., Perturbing Attention Gives You More Bang for the Buck (CAAT), CVPR 2024"
    reference = "CO2-cityao/CAAT scripts/train_CAAT.sh"
    eps, alpha, steps = 0.05 * 127.5 / 255, 5e-3 * 127.5 / 255, 250
    options = {"lr": 1e-5}

    def objective(self, x, x0, models, gen):
        return self.mean_over(models, lambda m: m.loss(x, self.prompt, generator=gen))

    def perturb(self, x0, models, gen, *, class_images=None):
        copies = [surrogate.clone(m) for m in models]
        params = [p for c in copies for n, p in c.unet.named_parameters()
                  if ".attn2.to_k." in f".{n}" or ".attn2.to_v." in f".{n}"]
        if not params:
            raise ValueError("caat: the UNet has no cross-attention (attn2) key/value projections")
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=1e-2)
        pgd = self.pgd()
        x = pgd.start(x0, gen)
        for i in range(self.steps):
            xi = x.detach().clone().requires_grad_(True)
            xt = xi
            for t in self.transforms:
                xt = t(xt, gen)
            loss = self.objective(xt, x0, copies, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            x = pgd.update(x, x0, xi.grad, i)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self._tick(i, float(loss.detach()))
        for p in params:
            p.requires_grad_(False)
        self.surrogates = copies
        return x
