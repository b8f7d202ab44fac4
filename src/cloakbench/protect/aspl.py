"""Anti-DreamBooth ASPL, T-ASPL, E-ASPL and the LoRA-surrogate ASPL (Van Le et al., ICCV 2023).

Alternating Surrogate and Perturbation Learning, per outer round: (1) copy the surrogate and train
the copy on the clean images (DreamBooth loss, ``surrogate_steps``); (2) ``pgd_steps`` sign-ascent
steps of ``L_dm`` on the images against the copy; (3) train the real surrogate on the *perturbed*
images (``train_steps``). Reference: ``VinAIResearch/Anti-DreamBooth`` ``attacks/aspl.py``:
``pgd_eps=0.05``, ``pgd_alpha=5e-3`` in [-1, 1] -> 6.375/255 and 0.6375/255; 50 rounds of 3 + 6 + 3;
SD 2.1-base, lr 5e-7. ``steps`` counts PGD updates (default 50 x 6 = 300); the last round is cut.
The clean set used for step (1) is the input itself unless ``clean_images`` is given (set_A).

T-ASPL adds a targeted term pulling the predicted previous latent towards the noised target
(``L_dm - ||x_hat_{t-1} - q(z_target, t-1)||^2``, same noise); the reference takes ``x_hat_{t-1}``
from a stochastic ``DDPMScheduler.step``, we take its mean (deterministic, same expectation). E-ASPL is ASPL with an ensemble of surrogates
(pass several models). ASPL-LoRA trains LoRA adapters (rank 4) instead of the full surrogate
(``attacks/aspl_lora.py``: 20 rounds x (10 LoRA + 10 PGD), ``pgd_alpha=1/255`` in [-1, 1] -> 0.5/255).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from . import surrogate
from .base import Protection, register_protection
from .engine import gradient
from .targets import load_target


def target_term(model, x, target, prompt, gen) -> torch.Tensor:
    """``||mu_{t-1}(x) - q(z_target, t-1)||^2``: DDPM posterior mean of the prediction vs the noised target."""
    terms = model.denoise_terms(x, prompt, generator=gen)
    t = terms["timesteps"]
    a = model.noise_scheduler.alphas_cumprod.to(x.device)
    prev = (t - 1).clamp_min(0)
    a_t, a_prev = a[t].view(-1, 1, 1, 1), a[prev].view(-1, 1, 1, 1)
    beta_t = 1 - a_t / a_prev
    x0_hat = model.predict_x0(terms)
    mean_prev = (a_prev.sqrt() * beta_t / (1 - a_t)) * x0_hat + ((1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)) * terms["noisy"]
    z_target = model.encode(target, sample=False)
    q_prev = a_prev.sqrt() * z_target + (1 - a_prev).sqrt() * terms["noise"]
    return F.mse_loss(mean_prev.float(), q_prev.float())


@register_protection
class ASPL(Protection):
    name = "aspl"
    paper = "Van Le et al., Anti-DreamBooth (ASPL), ICCV 2023"
    reference = "VinAIResearch/Anti-DreamBooth attacks/aspl.py"
    eps, alpha, steps = 0.05 * 127.5 / 255, 5e-3 * 127.5 / 255, 300
    options = {"pgd_steps": 6, "surrogate_steps": 3, "train_steps": 3, "lr": 5e-7, "prior_weight": 1.0,
               "clean_images": None, "target": None, "target_weight": 0.0}

    def objective(self, x, x0, models, gen):
        def one(m):
            loss = m.loss(x, self.prompt, generator=gen)
            if self.target_weight:
                loss = loss - self.target_weight * target_term(m, x, load_target(self.target, x), self.prompt, gen)
            return loss

        return self.mean_over(models, one)

    def train_surrogate(self, model, images, steps, gen, class_images, start=0):
        return surrogate.train_steps(model, images, self.prompt, steps, lr=self.lr, generator=gen,
                                     class_images=class_images, class_prompt=self.class_prompt,
                                     prior_weight=self.prior_weight, start=start)

    def perturb(self, x0, models, gen, *, class_images=None):
        clean = x0 if self.clean_images is None else self.clean_images.to(x0)
        surrogates = self.make_surrogates(models, gen)
        pgd = self.pgd()
        x = pgd.start(x0, gen)
        rounds = math.ceil(self.steps / self.pgd_steps)
        for r in range(rounds):
            copies = self.round_models(surrogates, clean, gen, class_images, r)
            self.before_pgd(copies, x, gen)
            for _ in range(min(self.pgd_steps, self.steps - self._done)):
                g, value = gradient(x, lambda v: self.objective(v, x0, copies, gen), transforms=self.transforms,
                                    samples=self.eot_samples, generator=gen)
                x = pgd.update(x, x0, g, self._done)
                self._tick(self._done, value)
            for s in surrogates:
                self.train_surrogate(s, x.detach(), self.train_steps, gen, class_images, start=r)
        self.surrogates = surrogates
        return x

    def make_surrogates(self, models, gen):
        """The surrogates kept across rounds: independent copies of the given models."""
        return [surrogate.clone(m) for m in models]

    def round_models(self, surrogates, clean, gen, class_images, r):
        """Step (1): copies of the surrogates trained on the clean images; PGD runs against them."""
        copies = []
        for s in surrogates:
            c = surrogate.clone(s)
            self.train_surrogate(c, clean, self.surrogate_steps, gen, class_images, start=r)
            copies.append(c)
        return copies

    def before_pgd(self, copies, x, gen) -> None:
        """Hook run after the surrogate copies are trained, before the round's PGD steps (SimAC)."""


@register_protection
class TASPL(ASPL):
    name = "t-aspl"
    paper = "Van Le et al., Anti-DreamBooth (targeted ASPL), ICCV 2023"
    options = {**ASPL.options, "target_weight": 1.0}


@register_protection
class EASPL(ASPL):
    """ASPL over an ensemble (the paper: SD 1.4 + SD 1.5 + SD 2.1-base); needs at least two models."""

    name = "e-aspl"
    paper = "Van Le et al., Anti-DreamBooth (ensemble ASPL), ICCV 2023"
    min_models = 2

    def perturb(self, x0, models, gen, *, class_images=None):
        if len(models) < self.min_models:
            raise InputError("e-aspl needs an ensemble: pass two or more surrogate models (--model a,b)")
        return super().perturb(x0, models, gen, class_images=class_images)


@register_protection
class ASPLLoRA(ASPL):
    """ASPL with LoRA surrogates (rank 4 on the UNet attention), for 24 GB GPUs."""

    name = "aspl-lora"
    paper = "Van Le et al., Anti-DreamBooth, attacks/aspl_lora.py (2025)"
    reference = "VinAIResearch/Anti-DreamBooth attacks/aspl_lora.py"
    eps, alpha, steps = 0.05 * 127.5 / 255, 127.5 / 255 / 255, 200
    options = {**ASPL.options, "pgd_steps": 10, "surrogate_steps": 10, "train_steps": 0, "lr": 1e-4, "rank": 4}

    def make_surrogates(self, models, gen):
        """Copies of the models with rank-``rank`` LoRA adapters on the UNet attention (seeded from ``gen``)."""
        from peft import LoraConfig

        loras = []
        for m in models:
            c = surrogate.clone(m)
            with torch.random.fork_rng(devices=[]):  # LoRA init draws from the global RNG: seed it from ours
                torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
                c.unet.add_adapter(LoraConfig(r=self.rank, lora_alpha=self.rank, init_lora_weights="gaussian",
                                              target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
            loras.append(c)
        return loras

    def round_models(self, surrogates, clean, gen, class_images, r):
        """The LoRA surrogates themselves, their adapters trained on the clean images (no copies)."""
        for c in surrogates:
            params = [p for n, p in c.unet.named_parameters() if "lora" in n]
            surrogate.train_steps(c, clean, self.prompt, self.surrogate_steps, lr=self.lr, generator=gen,
                                  class_images=class_images, class_prompt=self.class_prompt,
                                  prior_weight=self.prior_weight, params=params, start=r)
        return surrogates
