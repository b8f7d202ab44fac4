"""PID, prompt-independent defense (Li et al., ICML 2024): attack the VAE encoder posterior only.

Maximise ``MSE(log var(x), log var(x0)) + MSE(mean(x), mean(x0))`` of the posterior q(z|x)
(``add-log``; alternatives ``mean``, ``var``, ``add``, whose "var" is the posterior std as in the
reference code) with a uniform random start and 1/255 sign
steps. Defaults from ``PKU-ML/Diffusion-PID-Protection`` ``PID.py``: 12.75/255 ([0, 1] units),
1000 steps. Cheap: no UNet.
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import Protection, register_protection


@register_protection
class PID(Protection):
    name = "pid"
    paper = "Li et al., Prompt-Independent Data Protection Against Latent Diffusion Models, ICML 2024"
    reference = "PKU-ML/Diffusion-PID-Protection PID.py"
    eps, alpha, steps = 12.75 / 255, 1 / 255, 1000
    random_start = True
    options = {"loss": "add-log"}

    def objective(self, x, x0, models, gen):
        if self.loss not in ("add-log", "add", "mean", "var"):
            raise ValueError(f"pid loss must be add-log, add, mean or var, not {self.loss!r}")

        def one(m):
            d = m.vae.encode(x * 2 - 1).latent_dist
            d0 = m.vae.encode(x0 * 2 - 1).latent_dist
            mean = F.mse_loss(d.mean, d0.mean.detach())
            # "var" / "add" compare the posterior *std*, as the reference does despite the names
            # (PKU-ML/Diffusion-PID-Protection PID.py:229-230, 242-245); "add-log" the log-variance
            spread = d.logvar if self.loss == "add-log" else d.std
            spread0 = d0.logvar if self.loss == "add-log" else d0.std
            v = F.mse_loss(spread, spread0.detach())
            return {"mean": mean, "var": v}.get(self.loss, mean + v)

        return self.mean_over(models, one)
