"""TVM: total-variation minimisation with random pixel drop (Guo et al., ICLR 2018; used by MetaCloak
and DiffShortcut ``defenses/tvm.py``), with our own open solver instead of cvxpy + MOSEK.

Resize to 64 x 64 (antialiased), drop pixels with probability p = 0.02 (mask X), then solve
``min_Z ||(1 - X) * (Z - x)||_2 + lam * TV(Z)`` (isotropic TV, lam = 0.01) per channel by Adam on a
smoothed objective, and resize back to the input size (the reference saves 64 px and resizes at
training time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Purifier, register_purifier


def tv_isotropic(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    dx = z[..., :, 1:] - z[..., :, :-1]
    dy = z[..., 1:, :] - z[..., :-1, :]
    return torch.sqrt(dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2 + eps).flatten(1).sum(1)


@register_purifier
class TVM(Purifier):
    name = "tvm"
    paper = "Guo et al., Countering Adversarial Images using Input Transformations (TVM), ICLR 2018"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/tvm.py"
    options = {"size": 64, "drop": 0.02, "lam": 0.01, "iters": 300, "lr": 0.01}

    def purify(self, images):
        h, w = images.shape[-2:]
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        keep = (torch.rand(x.shape[0], 1, *x.shape[-2:], generator=self.generator()) >= self.drop).to(x)
        z = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        for _ in range(int(self.iters)):
            fid = torch.sqrt(((keep * (z - x)) ** 2).flatten(1).sum(1) + 1e-12)
            loss = (fid + self.lam * tv_isotropic(z)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        z = z.detach().clamp(0, 1)
        return F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
