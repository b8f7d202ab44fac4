"""SimAC (Wang et al., CVPR 2024; ``somuchtome/SimAC`` ``attacks/time_feature.py``).

ASPL with two additions. (a) Adaptive timesteps, per image: starting from all T timesteps, repeat
(at most ``search_steps`` = 50 times, while more than ``keep`` = 100 remain): draw 5 timesteps from
the remaining set, score each by the L1 norm of the input gradient of ``L_dm``, and delete the
window of +-20 around the lowest-scoring one (clamped to ``[delta_t, T - delta_t]``). PGD then samples
timesteps from each image's remaining set. ``search="once"`` (default) is the released code's
(``attacks/time_feature.py:740-850``, called once at ``:1008-1017``): one search before the loop, on the
pretrained model and the clean images, the 5 candidates drawn with replacement, and after each deletion
one PGD step at the highest-scoring timestep on a working copy of the image (discarded afterwards).
``search="every_round"`` repeats the search at each round on that round's trained surrogate copy and
the current images, candidates without replacement and no local step (cloakbench's earlier reading). (b) Feature interference: MSE between the conv2 outputs
of the last UNet up block's ResNets for the perturbed and the round's starting images (same t,
noise). The released code adds (b) as a detached number (no gradient); we follow the paper and let
it act with ``feature_weight`` (set 0 to reproduce the release). Budget: ``pgd_eps=16/255`` in
[-1, 1] -> 8/255, ``pgd_alpha=0.005`` -> 0.6375/255; ASPL's 50 x (3 + 6 + 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .aspl import ASPL
from .base import register_protection


@register_protection
class SimAC(ASPL):
    name = "simac"
    paper = "Wang et al., SimAC: A Simple Anti-Customization Method for Protecting Face Privacy, CVPR 2024"
    reference = "somuchtome/SimAC attacks/time_feature.py"
    eps, alpha, steps = 8 / 255, 0.005 * 127.5 / 255, 300
    options = {**ASPL.options, "search_steps": 50, "delta_t": 20, "window": 20, "keep": 100, "feature_weight": 1.0,
               "search": "once"}

    def select_timesteps(self, model, x, gen, *, reference: bool = False) -> list[torch.Tensor]:
        """Per image, the remaining timestep set after the greedy low-gradient window deletion.
        ``reference``: candidates with replacement and a local PGD step at the best candidate after each
        deletion (the released code, ``time_feature.py:753-848``)."""
        T = model.num_train_timesteps
        sets = []
        for i in range(x.shape[0]):
            mask = torch.ones(T, dtype=torch.bool)
            orig = x[i : i + 1].detach()
            work = orig.clone()
            for _ in range(self.search_steps):
                remaining = mask.nonzero().flatten()
                if remaining.numel() <= self.keep:
                    break
                pick = (torch.randint(remaining.numel(), (5,), generator=gen) if reference
                        else torch.randperm(remaining.numel(), generator=gen)[:5])
                cand = remaining[pick]
                scores = [float(self._input_grad(model, work, int(t), gen).abs().sum()) for t in cand]
                low = int(cand[int(torch.tensor(scores).argmin())].clamp(self.delta_t, T - self.delta_t))
                mask[max(0, low - self.window) : low + self.window] = False
                if reference:  # one sign step at the highest-scoring timestep, inside the budget
                    g = self._input_grad(model, work, int(cand[int(torch.tensor(scores).argmax())]), gen)
                    work = (orig + (work + self.alpha * g.sign() - orig).clamp(-self.eps, self.eps)).clamp(0, 1)
            sets.append(mask.nonzero().flatten())
        return sets

    def _input_grad(self, model, x, t: int, gen) -> torch.Tensor:
        """The gradient of ``L_dm`` at timestep ``t`` with respect to the image ``x`` (1 x 3 x H x W)."""
        xi = x.detach().clone().requires_grad_(True)
        loss = model.loss(xi, self.prompt, timesteps=torch.tensor([t]), generator=gen)
        (g,) = torch.autograd.grad(loss, xi)
        return g

    def _features(self, model):
        store = []
        block = model.unet.up_blocks[-1]
        hooks = [r.conv2.register_forward_hook(lambda mod, inp, out: store.append(out)) for r in block.resnets]
        return store, hooks

    def objective(self, x, x0, models, gen):
        def one(m):
            sets = getattr(self, "_sets", {}).get(id(m))
            t = None
            if sets is not None:
                t = torch.stack([s[torch.randint(s.numel(), (1,), generator=gen)][0] for s in sets])
            noise_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
            store, hooks = self._features(m)
            try:
                loss = m.loss(x, self.prompt, timesteps=t, generator=torch.Generator().manual_seed(noise_seed))
                feats = list(store)
                store.clear()
                if self.feature_weight and feats and getattr(self, "_start", None) is not None:
                    with torch.no_grad():
                        m.loss(self._start, self.prompt, timesteps=t, generator=torch.Generator().manual_seed(noise_seed))
                    ref = list(store)
                    loss = loss + self.feature_weight * sum(F.mse_loss(a, b.detach()) for a, b in zip(feats, ref)) / len(feats)
            finally:
                for h in hooks:
                    h.remove()
            return loss

        return self.mean_over(models, one)

    def perturb(self, x0, models, gen, *, class_images=None):
        if self.search not in ("once", "every_round"):
            raise ValueError(f"simac search must be 'once' or 'every_round', not {self.search!r}")
        if self.search == "once":  # on the pretrained surrogates and the clean images, before any round
            self._once = [self.select_timesteps(m, x0, gen, reference=True) for m in models]
        return super().perturb(x0, models, gen, class_images=class_images)

    def before_pgd(self, copies, x, gen) -> None:
        """Each surrogate copy's timesteps (searched once, or now on this round's copy) and the round's
        starting images (feature loss)."""
        if self.search == "once":
            self._sets = {id(c): sets for c, sets in zip(copies, self._once)}
        else:
            self._sets = {id(c): self.select_timesteps(c, x, gen) for c in copies}
        self._start = x.detach().clone()
