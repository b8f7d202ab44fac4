"""Full-reference fidelity (PSNR, SSIM, LPIPS) and the measured budget of a protection (L-inf, L2).

``references`` are the paired originals (same order and size). PSNR / SSIM measure how visible a
perturbation is (clean vs protected) or how faithful a purifier is (clean vs purified).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..images import perturbation_norms, quantize
from .base import Metric, MetricResult, nanmean, register_metric


def _paired(images: torch.Tensor, references: torch.Tensor | None, name: str) -> torch.Tensor:
    if references is None or references.shape != images.shape:
        got = None if references is None else tuple(references.shape)
        raise ValueError(f"{name} needs references paired with the images: shape {tuple(images.shape)}, got {got}")
    return references


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1] (data range 1); inf for identical images."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004): Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03, data range 1.

    Computed per channel over the valid region and averaged, as ``skimage.metrics.structural_similarity``
    with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis``.
    """
    c1, c2 = 0.01**2, 0.03**2
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).float()
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window).contiguous()

    def filt(x):
        return F.conv2d(x, kernel.to(x), groups=x.shape[1])

    a, b = a.float(), b.float()
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


@register_metric
class PSNR(Metric):
    """PSNR (dB) against paired references; higher = closer."""

    name = "psnr"
    higher_better = None
    value_range = (0.0, float("inf"))
    needs_reference = True
    paired = True

    def compute(self, images, references) -> MetricResult:
        per = psnr(images, _paired(images, references, self.name)).tolist()
        return self.result(nanmean(per), per)


@register_metric
class SSIM(Metric):
    """SSIM against paired references (Wang et al. 2004); 1 = identical."""

    name = "ssim"
    higher_better = None
    value_range = (-1.0, 1.0)
    needs_reference = True
    paired = True

    def compute(self, images, references) -> MetricResult:
        per = ssim(images, _paired(images, references, self.name)).tolist()
        return self.result(nanmean(per), per)


class _Budget(Metric):
    higher_better = None
    value_range = (0.0, 255.0)
    needs_reference = True
    paired = True
    field = ""

    def compute(self, images, references) -> MetricResult:
        d = perturbation_norms(_paired(images, references, self.name), images, measured=True)
        per = getattr(d, f"{self.field}_255").tolist()
        return self.result(max(per) if self.field == "linf" else nanmean(per), per,
                           details={"units": "k/255, measured after 8-bit rounding",
                                    "aggregate": "max" if self.field == "linf" else "mean"})


@register_metric
class LinfBudget(_Budget):
    """Measured L-inf distance to the clean references, in k/255 after 8-bit rounding (max over images)."""

    name = "linf"
    field = "linf"


@register_metric
class L2Budget(_Budget):
    """Measured L2 distance to the clean references, in k/255 units after 8-bit rounding (mean)."""

    name = "l2"
    field = "l2"


@register_metric
class LPIPS(Metric):
    """LPIPS (Zhang et al. 2018) through the ``lpips`` package; the backbone is named in the label.

    Needs the package (``pip install lpips``) and its torchvision backbone weights in the torch hub
    cache; IMPRESS optimises VGG-LPIPS, so prefer ``alex`` to compare purifiers. Missing pieces raise.
    """

    name = "lpips"
    requires = ("lpips",)
    higher_better = None
    value_range = (0.0, 1.0)
    needs_reference = True
    paired = True
    licence = "BSD-2-Clause (lpips); torchvision backbone weights"

    def __init__(self, net: str = "alex", device: str | None = None) -> None:
        try:
            import lpips
        except ImportError as exc:
            raise ImportError(f"LPIPS needs `pip install lpips` and torchvision ({exc})") from exc
        from ..models.device import pick_device

        try:
            self.model = lpips.LPIPS(net=net, verbose=False).eval().to(pick_device(device))
        except Exception as exc:
            raise FileNotFoundError(
                f"LPIPS-{net} backbone weights are not available offline (torchvision downloads them to "
                f"the torch hub cache): {exc}") from exc
        self.backend = net

    @torch.no_grad()
    def compute(self, images, references) -> MetricResult:
        refs = _paired(images, references, self.name)
        dev = next(self.model.parameters()).device
        per = self.model(quantize(images).to(dev) * 2 - 1, quantize(refs).to(dev) * 2 - 1).flatten().tolist()
        return self.result(nanmean(per), per)
