"""The DreamBooth step with nothing around it: the same math as :class:`~cloakbench.personalize.DreamBoothTrainer`
(same data order, noise, prompts, loss, clipping and optimizer) and none of its host work (no log, no
checkpoint, no per-step sync). It is the baseline ``benchmarks/train.py`` measures the trainer against,
and the reference the test suite checks the trainer's losses with."""

from __future__ import annotations

import contextlib

import torch

from ..personalize.dreambooth import DreamBoothTrainer, _order, _step_generator


def bare_losses(trainer: DreamBoothTrainer, instance_latents: torch.Tensor, class_latents: torch.Tensor | None,
                steps: int) -> torch.Tensor:
    """Train ``trainer``'s model with its optimizer for ``steps`` steps on cached latents (``B x 4 x h x w``,
    as :meth:`DreamBoothTrainer._cache_latents` gives them); returns the per-step losses (on the device)."""
    cfg, model, opt = trainer.cfg, trainer.model, trainer.opt
    params = list(trainer.params.values())
    prior = class_latents is not None and cfg.prior_weight > 0
    prompts = [trainer.instance_prompt] + ([trainer.class_prompt] if prior else [])
    length = max(instance_latents.shape[0], class_latents.shape[0] if prior else 0)
    autocast = (torch.autocast(model.device.type, dtype=torch.bfloat16 if trainer.precision == "bf16" else torch.float16)
                if trainer.precision != "no" else contextlib.nullcontext())
    model.unet.train()
    model.text_encoder.train(trainer.text_encoder_trained)
    losses = []
    for step in range(steps):
        k = int(_order(cfg.seed, step // length, length)[step % length])
        batch = instance_latents[k % instance_latents.shape[0]][None]
        if prior:
            batch = torch.cat([batch, class_latents[k % class_latents.shape[0]][None]])
        with autocast:
            per = model.loss(None, prompts, generator=_step_generator(cfg.seed, step), latents=batch, reduction="none")
            loss = per[0] + (cfg.prior_weight * per[1] if prior else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.detach())
    model.unet.eval()
    model.text_encoder.eval()
    return torch.stack(losses)
