"""Resizing shared by the super-resolution purifiers (not a purifier): PIL's bicubic filter, as the reference."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..images import to_pil


def pil_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size x size`` with PIL's bicubic filter (the reference's ``Image.resize`` default)."""
    out = [np.asarray(p.resize((size, size), Image.BICUBIC)) for p in to_pil(images)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255

