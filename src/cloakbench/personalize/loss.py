"""The DreamBooth objective (Ruiz et al., CVPR 2023), shared by training and by surrogate-based protections.

``L = L_dm(instance images, instance prompt) + prior_weight * L_dm(class images, class prompt)``:
the class-prior term (prior preservation) keeps the class concept from drifting. Images are
``B x 3 x H x W`` in [0, 1].
"""

from __future__ import annotations

import torch

from ..models.bundle import DiffusionModel


def dreambooth_loss(
    model: DiffusionModel,
    instance_images: torch.Tensor,
    instance_prompt: str,
    class_images: torch.Tensor | None = None,
    class_prompt: str | None = None,
    prior_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Instance denoising loss plus the weighted prior-preservation loss (when class images are given)."""
    loss = model.loss(instance_images, instance_prompt, generator=generator)
    if class_images is not None and prior_weight > 0:
        if class_prompt is None:
            raise ValueError("prior preservation needs a class prompt")
        loss = loss + prior_weight * model.loss(class_images, class_prompt, generator=generator)
    return loss
