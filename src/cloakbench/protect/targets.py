"""Target images for targeted protections (T-ASPL, PhotoGuard, Mist, SDST).

The reference repositories ship their own targets (Anti-DreamBooth ``data/target.jpg``, Mist
``MIST.png``), which we do not redistribute: pass a path to use them. The default is a deterministic
high-contrast texture (our choice, [inf]), so a targeted protection runs out of the box.
"""

from __future__ import annotations

import math
import os

import torch


def pattern(height: int, width: int, period: int = 8) -> torch.Tensor:
    """A ``3 x H x W`` texture in [0, 1]: diagonal stripes x checkerboard, colour-shifted per channel."""
    y = torch.arange(height, dtype=torch.float32)[:, None]
    x = torch.arange(width, dtype=torch.float32)[None, :]
    chans = []
    for c in range(3):
        stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * (x + y + c * period / 3) / period)
        checker = ((torch.div(x, period, rounding_mode="floor") + torch.div(y, period, rounding_mode="floor")) % 2)
        chans.append(0.6 * stripes + 0.4 * checker)
    return torch.stack(chans).clamp(0, 1)


def load_target(spec: str | os.PathLike[str] | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Target batch shaped like ``like`` (``B x 3 x H x W``): None -> :func:`pattern`, "gray" -> 0.5, path, or tensor."""
    b, _, h, w = like.shape
    if spec is None or spec == "pattern":
        t = pattern(h, w)[None]
    elif isinstance(spec, torch.Tensor):
        t = spec if spec.ndim == 4 else spec[None]
    elif spec in ("gray", "grey"):
        t = torch.full((1, 3, h, w), 0.5)
    else:
        from ..images import load_images

        t = load_images([spec], size=None, min_size=None)
        t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return t.to(like).expand(b, -1, -1, -1).clamp(0, 1)
