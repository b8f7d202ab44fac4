"""MetaCloak (Liu et al., CVPR 2024; ``liuyixin-louis/MetaCloak`` ``robust_facecloak/attacks/algs/metacloak.py``).

A pool of surrogates is built by DreamBooth-training the model on the clean images for
``pool_train_steps`` (1000) and keeping a checkpoint at step 0 and every ``pool_interval`` (200)
steps (6 checkpoints). Then for each of ``trials`` (4) x checkpoint, the surrogate is reset to that
checkpoint and ``rounds`` (interval / 2 = 100) rounds alternate ``pgd_per_round`` (6) robust PGD
steps (EOT: Gaussian blur kernel 7, sigma ~ U(0.1, 2), horizontal flip; MetaCloak's ``gau`` mode)
with ``unroll_steps`` (2) DreamBooth steps of the surrogate on the perturbed images. PGD ascends
``L_dm``, 11/255 with steps of 1.1/255 (``r=11``, step ``r/10`` in [0, 255]), no random start.
``steps`` (= 4 x 6 x 100 x 6 = 14,400 by default) caps the PGD updates; the loop stops there.
Surrogate weights are kept on the CPU between uses.
"""

from __future__ import annotations

import torch

from . import surrogate
from .base import Protection, register_protection
from .engine import gradient


def _state(model) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t.detach().cpu().clone() for n, t in getattr(model, k).state_dict().items()}
            for k in ("unet", "text_encoder")}


def _load(model, state) -> None:
    for k, sd in state.items():
        getattr(model, k).load_state_dict(sd)


@register_protection
class MetaCloak(Protection):
    name = "metacloak"
    paper = "Liu et al., MetaCloak: Preventing Unauthorized Subject-driven Text-to-image Diffusion-based Synthesis via Meta-learning, CVPR 2024"
    reference = "liuyixin-louis/MetaCloak robust_facecloak/attacks/algs/metacloak.py"
    eps, alpha, steps = 11 / 255, 1.1 / 255, 4 * 6 * 100 * 6
    options = {"pool_train_steps": 1000, "pool_interval": 200, "trials": 4, "rounds": 100, "pgd_per_round": 6,
               "unroll_steps": 2, "lr": 5e-7, "prior_weight": 1.0}

    def __init__(self, **kw):
        kw.setdefault("transforms", "blur,flip")
        super().__init__(**kw)

    def objective(self, x, x0, models, gen):
        return self.mean_over(models, lambda m: m.loss(x, self.prompt, generator=gen))

    def _train(self, model, images, steps, gen, class_images, start=0):
        surrogate.train_steps(model, images, self.prompt, steps, lr=self.lr, generator=gen, class_images=class_images,
                              class_prompt=self.class_prompt, prior_weight=self.prior_weight, start=start)

    def perturb(self, x0, models, gen, *, class_images=None):
        pools = []
        for m in models:  # checkpoint pool: step 0 and every pool_interval steps
            work = surrogate.clone(m)
            pool = [_state(work)]
            done = 0
            while done < self.pool_train_steps:
                n = min(self.pool_interval, self.pool_train_steps - done)
                self._train(work, x0, n, gen, class_images, start=done)
                done += n
                pool.append(_state(work))
            pools.append((work, pool))
        pgd = self.pgd()
        x = pgd.start(x0, gen)
        for trial in range(self.trials):
            for k in range(len(pools[0][1])):
                for work, pool in pools:
                    _load(work, pool[k])
                for r in range(self.rounds):
                    for _ in range(self.pgd_per_round):
                        if self._done >= self.steps:
                            return x
                        g, value = gradient(x, lambda v: self.objective(v, x0, [w for w, _ in pools], gen),
                                            transforms=self.transforms, samples=self.eot_samples, generator=gen)
                        x = pgd.update(x, x0, g, self._done)
                        self._tick(self._done, value)
                    for work, _ in pools:
                        self._train(work, x.detach(), self.unroll_steps, gen, class_images, start=r)
        return x
