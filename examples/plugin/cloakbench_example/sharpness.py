"""Sharpness: a metric, the worked example of docs/EXTENDING.md.

The variance of the Laplacian of each image's luma (Pech-Pacheco et al. 2000), a no-reference focus
measure: a blurred image scores lower. Input: ``B x 3 x H x W`` float32 in [0, 1]; each value is in 8-bit
levels squared (luma scaled to [0, 255], OpenCV's ``Laplacian(ksize=1).var()``); the aggregate is the mean.
Noise raises it too: read it beside a quality metric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cloakbench.metrics.base import Metric, MetricResult, nanmean

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class Sharpness(Metric):
    name = "sharpness"
    higher_better = True
    value_range = (0.0, float("inf"))
    needs_reference = False  # scores the samples alone (no clean photos of the identity)
    needs_face = False
    paired = False
    licence = "Apache-2.0 (no model)"

    def compute(self, images, references=None) -> MetricResult:
        luma = (images * torch.tensor([0.299, 0.587, 0.114]).to(images).view(1, 3, 1, 1)).sum(1, keepdim=True)
        lap = F.conv2d(luma * 255, LAPLACIAN.to(images).view(1, 1, 3, 3))  # valid part: (H - 2) x (W - 2)
        per = lap.flatten(1).var(dim=1, correction=0).tolist()
        return self.result(nanmean(per), per, details={"units": "8-bit levels squared"})
