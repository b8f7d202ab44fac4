"""Classic input-transformation baselines of the paper's comparison (docs/PAPER.md §9; docs/PROTECTIONS.md §3).

* ``jpeg``: PIL re-encode, quality 75 (DiffShortcut ``defenses/jpeg.py``).
* ``blur``: PIL ``GaussianBlur(radius=5)`` (the reference script calls the radius "kernel_size").
* ``noise``: additive Gaussian noise, sigma 0.05 = 12.75/255 in [0, 1], clipped (robust-style-mimicry).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..images import to_pil
from .base import Purifier, register_purifier


def _from_pil(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(i.convert("RGB"))).permute(2, 0, 1) for i in images]).float() / 255


@register_purifier
class JPEG(Purifier):
    name = "jpeg"
    paper = "JPEG compression baseline (quality 75, DiffShortcut)"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/jpeg.py"
    options = {"quality": 75}

    def purify(self, images):
        out = []
        for img in to_pil(images):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(self.quality))
            buf.seek(0)
            out.append(Image.open(buf).convert("RGB"))
        return _from_pil(out)


@register_purifier
class Blur(Purifier):
    name = "blur"
    paper = "Gaussian blur baseline (PIL radius 5, DiffShortcut)"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/gau.py"
    options = {"radius": 5.0}

    def purify(self, images):
        return _from_pil([i.filter(ImageFilter.GaussianBlur(float(self.radius))) for i in to_pil(images)])


@register_purifier
class Noise(Purifier):
    name = "noise"
    paper = "Gaussian noise baseline (sigma 0.05 in [0, 1], robust-style-mimicry)"
    reference = "ethz-spylab/robust-style-mimicry noise.py"
    differentiable = True
    options = {"sigma": 0.05}

    def purify(self, images):
        n = torch.randn(images.shape, generator=self.generator()).to(images)
        return (images + float(self.sigma) * n).clamp(0, 1)
