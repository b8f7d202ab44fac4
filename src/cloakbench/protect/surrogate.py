"""Surrogate fine-tuning for protections that simulate the victim's DreamBooth (ASPL, FSMG, MetaCloak, ...).

The surrogate is trained with the same DreamBooth objective as :mod:`cloakbench.personalize`
(one instance image per step, cycling, plus one class image for prior preservation when given).
"""

from __future__ import annotations

import copy

import torch

from ..models.bundle import DiffusionModel
from ..personalize.loss import dreambooth_loss


def clone(model: DiffusionModel) -> DiffusionModel:
    """An independent deep copy (weights included) of the bundle."""
    return copy.deepcopy(model)


def trainable(model: DiffusionModel, text_encoder: bool = True) -> list[torch.nn.Parameter]:
    """Parameters a full DreamBooth trains: the UNet and (optionally) the text encoder."""
    params = list(model.unet.parameters())
    if text_encoder:
        params += list(model.text_encoder.parameters())
    return params


def train_steps(
    model: DiffusionModel,
    images: torch.Tensor,
    prompt: str,
    steps: int,
    *,
    lr: float = 5e-7,
    generator: torch.Generator | None = None,
    class_images: torch.Tensor | None = None,
    class_prompt: str | None = None,
    prior_weight: float = 1.0,
    params: list[torch.nn.Parameter] | None = None,
    start: int = 0,
) -> list[float]:
    """Train ``model`` in place for ``steps`` DreamBooth steps (AdamW, constant ``lr``); returns the losses.

    ``images`` (``B x 3 x H x W`` in [0, 1]) are used one per step, cycling from index ``start``.
    ``params`` default to the UNet and text encoder (Anti-DreamBooth's ``train_one_epoch``).
    """
    if steps <= 0:
        return []
    params = trainable(model) if params is None else params
    for p in params:
        p.requires_grad_(True)
    model.unet.train()
    model.text_encoder.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    losses = []
    images = images.detach()
    for i in range(steps):
        j = (start + i) % images.shape[0]
        cls = None if class_images is None else class_images[(start + i) % class_images.shape[0]][None]
        loss = dreambooth_loss(model, images[j : j + 1], prompt, cls, class_prompt, prior_weight, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    for p in params:
        p.requires_grad_(False)
    model.unet.eval()
    model.text_encoder.eval()
    return losses
