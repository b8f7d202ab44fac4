"""Median: a purifier, the worked example of docs/EXTENDING.md.

A ``size`` x ``size`` median filter of each channel (reflected borders), the classic remover of
pixel-sized noise. Input and output: ``B x 3 x H x W`` float32 in [0, 1], the same size.
"""

from __future__ import annotations

import torch.nn.functional as F

from cloakbench.purify.base import Purifier


class Median(Purifier):
    name = "median"
    paper = "worked example of docs/EXTENDING.md: a median filter"
    differentiable = True  # autograd goes through torch's median (to the chosen pixel of each window)
    options = {"size": 3}  # window side in pixels, odd (bench YAML: purify_options)

    def purify(self, images):
        k = int(self.size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"{self.name}: size must be an odd number >= 1, got {self.size}")
        b, c, h, w = images.shape
        padded = F.pad(images, (k // 2,) * 4, mode="reflect")
        windows = F.unfold(padded, k)  # B x (C * k * k) x (H * W)
        return windows.view(b, c, k * k, h * w).median(dim=2).values.view(b, c, h, w)
