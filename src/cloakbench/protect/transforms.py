"""Differentiable random transforms for expectation over transformations (EOT).

Each transform maps ``B x 3 x H x W`` in [0, 1] to the same shape, draws its randomness from the
given generator (so a seeded protection is reproducible), and lets gradients through. MetaCloak's
robust PGD uses resize, crop, Gaussian blur (kernel 7) and horizontal flip; the JPEG approximation
follows Shin & Song (2017): the rounding in quantisation is replaced by ``r(x) + (x - r(x))^3``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..registry import Registry

TRANSFORMS: Registry[Callable] = Registry("EOT transform")


def _u(generator: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


@TRANSFORMS.register("resize")
class RandomResize:
    """Down-scale by a random factor in ``[low, 1]`` then back up (bilinear): loses high frequencies."""

    def __init__(self, low: float = 0.5) -> None:
        self.low = low

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = _u(generator, self.low, 1.0)
        small = F.interpolate(x, size=(max(8, round(h * s)), max(8, round(w * s))), mode="bilinear", align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


@TRANSFORMS.register("crop")
class RandomCrop:
    """Crop a random window of ``[low, 1]`` of each side and resize it back (MetaCloak: center crop)."""

    def __init__(self, low: float = 0.8) -> None:
        self.low = low

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = _u(generator, self.low, 1.0)
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        top = int(_u(generator, 0, h - ch + 1e-9))
        left = int(_u(generator, 0, w - cw + 1e-9))
        return F.interpolate(x[..., top : top + ch, left : left + cw], size=(h, w), mode="bilinear", align_corners=False)


@TRANSFORMS.register("blur")
class RandomBlur:
    """Gaussian blur with a ``kernel`` x ``kernel`` window and sigma ~ U(sigma_low, sigma_high) (torchvision's range)."""

    def __init__(self, kernel: int = 7, sigma_low: float = 0.1, sigma_high: float = 2.0) -> None:
        self.kernel, self.lo, self.hi = kernel, sigma_low, sigma_high

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = _u(generator, self.lo, self.hi)
        r = torch.arange(self.kernel, dtype=x.dtype, device=x.device) - (self.kernel - 1) / 2
        g = torch.exp(-(r**2) / (2 * sigma**2))
        g = g / g.sum()
        c = x.shape[1]
        x = F.pad(x, [self.kernel // 2] * 4, mode="reflect")
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@TRANSFORMS.register("flip")
class RandomFlip:
    """Horizontal flip with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.flip(-1) if _u(generator, 0, 1) < self.p else x


@TRANSFORMS.register("rotate")
class RandomRotate:
    """Rotation by a random angle in ``[-degrees, degrees]`` (bilinear, border padding)."""

    def __init__(self, degrees: float = 10.0) -> None:
        self.degrees = degrees

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        a = math.radians(_u(generator, -self.degrees, self.degrees))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype,
                             device=x.device).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


# JPEG Annex K luminance / chrominance quantisation tables.
_QY = torch.tensor([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float32).view(8, 8)
_QC = torch.full((8, 8), 99.0)
_QC[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=torch.float32)


@TRANSFORMS.register("jpeg")
class JPEGApprox:
    """Differentiable JPEG: YCbCr, 8x8 DCT, quality-scaled quantisation with a cubic rounding proxy.

    Quality ~ U(q_low, q_high) per call; no chroma subsampling. Image sides must be multiples of 8.
    """

    def __init__(self, q_low: int = 50, q_high: int = 90) -> None:
        self.lo, self.hi = q_low, q_high
        self.d = _dct_matrix()

    @staticmethod
    def _scale(q: float) -> float:
        return (5000 / q if q < 50 else 200 - 2 * q) / 100

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % 8 or w % 8:
            raise ValueError(f"JPEG approximation needs sides divisible by 8, got {h}x{w}")
        q = _u(generator, self.lo, self.hi)
        s = self._scale(q)
        r, g, bl = x[:, 0] * 255, x[:, 1] * 255, x[:, 2] * 255
        ycc = torch.stack([0.299 * r + 0.587 * g + 0.114 * bl,
                           128 - 0.168736 * r - 0.331264 * g + 0.5 * bl,
                           128 + 0.5 * r - 0.418688 * g - 0.081312 * bl], 1) - 128
        d = self.d.to(x)
        blocks = ycc.unfold(2, 8, 8).unfold(3, 8, 8)  # b c h/8 w/8 8 8
        coef = d @ blocks @ d.T
        qt = torch.stack([_QY, _QC, _QC]).to(x).clamp_min(1).mul(s).clamp_min(1).view(1, 3, 1, 1, 8, 8)
        z = coef / qt
        zr = torch.round(z)
        coef = (zr + (z - zr) ** 3) * qt
        blocks = d.T @ coef @ d
        ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w) + 128
        y, cb, cr = ycc[:, 0], ycc[:, 1] - 128, ycc[:, 2] - 128
        rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1) / 255
        return rgb.clamp(0, 1)


def make_transforms(spec: str | list | tuple | None) -> list:
    """``"resize,crop,blur,flip,jpeg"`` (or a list of names / callables) -> transform objects."""
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [TRANSFORMS.create(i.strip()) if isinstance(i, str) else i for i in items if not isinstance(i, str) or i.strip()]
