"""PhotoGuard (Salman et al., ICML 2023): the encoder attack and the end-to-end diffusion attack.

Encoder attack: minimise ``||E(x).mean - z_target||_2``. ``target="zero"`` (default) is the img2img
notebook's ``||E(x).mean||`` (``notebooks/demo_simple_attack_img2img.ipynb`` cell 7); ``"gray"`` the
encoding of a flat grey image, as the demo app (``demo/app.py:35,50-63``); or any target image. Random
start, sign steps decaying linearly from alpha to alpha/100 (``decay_to=0.01``, the notebook's
``step_size - (step_size - step_size / 100) / iters * i``). Defaults from ``MadryLab/photoguard``
(``eps=0.06``, step 0.02, 1000 iterations in [-1, 1]): 7.65/255, 2.55/255.

End-to-end attack: back-propagate through a short img2img sampling chain (``denoise_steps=4`` DDIM
steps with classifier-free guidance) and pull the *generated* image towards the target, the gradient
averaged over ``grad_reps=10`` noise draws; L2 budget 8.0 ([0, 1] units over C x H x W; the
notebook's ``eps=16`` in [-1, 1]), L2-normalised steps of 0.5, 200 iterations. Memory heavy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Protection, register_protection
from .engine import run_pgd
from .targets import load_target


@register_protection
class PhotoGuard(Protection):
    name = "photoguard"
    paper = "Salman et al., Raising the Cost of Malicious AI-Powered Image Editing (encoder attack), ICML 2023"
    reference = "MadryLab/photoguard notebooks/demo_simple_attack_img2img.ipynb"
    eps, alpha, steps = 0.06 * 127.5 / 255, 0.02 * 127.5 / 255, 1000
    random_start, decay = True, True
    options = {"target": "zero", "decay_to": 0.01}

    def objective(self, x, x0, models, gen):
        if self.target == "zero":
            return -self.mean_over(models, lambda m: m.encode(x, sample=False).float().flatten(1).norm(dim=1).mean())
        target = load_target(self.target, x)
        return -self.mean_over(models, lambda m: (m.encode(x, sample=False) - m.encode(target, sample=False).detach())
                               .float().flatten(1).norm(dim=1).mean())


def img2img(model, x, prompt, gen, *, steps=4, strength=0.7, guidance=7.5, negative=""):
    """Differentiable DDIM img2img: encode, noise to ``strength``, ``steps`` guided DDIM steps, decode."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(model.noise_scheduler.config, clip_sample=False, set_alpha_to_one=False)
    total = max(1, round(steps / strength))
    sched.set_timesteps(total)
    timesteps = sched.timesteps[total - steps:]
    z = model.encode(x, sample=False)
    noise = torch.randn(z.shape, generator=gen).to(z)
    z = sched.add_noise(z, noise, timesteps[:1].repeat(z.shape[0]))
    cond = model.encode_prompt(prompt, batch_size=z.shape[0])
    uncond = model.encode_prompt(negative, batch_size=z.shape[0])
    for t in timesteps:
        eps = model.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = eps.chunk(2)
        z = sched.step(e_u + guidance * (e_c - e_u), t, z).prev_sample
    return model.decode(z)


@register_protection
class PhotoGuardE2E(Protection):
    name = "photoguard-e2e"
    paper = "Salman et al., Raising the Cost of Malicious AI-Powered Image Editing (diffusion attack), ICML 2023"
    reference = "MadryLab/photoguard notebooks/demo_complex_attack_inpainting.ipynb"
    eps, alpha, steps, norm, step = 16 * 127.5 / 255, 1 * 127.5 / 255, 200, "l2", "normalized"
    options = {"target": "gray", "denoise_steps": 4, "grad_reps": 10, "strength": 0.7, "guidance": 7.5}

    def objective(self, x, x0, models, gen):
        target = load_target(self.target, x)

        def one(m):
            out = img2img(m, x, self.prompt, gen, steps=self.denoise_steps, strength=self.strength,
                          guidance=self.guidance)
            return -F.mse_loss(out, target)

        return self.mean_over(models, one)

    def perturb(self, x0, models, gen, *, class_images=None):
        """PGD with the gradient averaged over ``grad_reps`` draws of the sampling noise."""
        return run_pgd(self.pgd(), x0, lambda x: self.objective(x, x0, models, gen), generator=gen,
                       transforms=self.transforms, samples=self.grad_reps * self.eot_samples, callback=self._tick)
