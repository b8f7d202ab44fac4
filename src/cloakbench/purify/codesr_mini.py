"""CodeSR on the mini world (arXiv 2406.18944 §4, scaled to 32 px): codebook restoration, then SR.

Stage 1 is the mini stack's codebook restorer (a diffusers ``VQModel`` whose encoder was trained to
map degraded photos onto clean-photo codes: CodeFormer's code-prediction idea, without the face
alignment step since the whole photo is the subject). Stage 2 mirrors the paper's "downsize, then x4
SR": the restored photo is downsized to ``pre_size`` (16 px) and brought back to 32 px by the mini
Real-ESRGAN-compact x2 model (spandrel ``Compact``). Pixel DiffPure / GrIDPure take ``model: mini``
for the mini pixel DDPM (16 px tiles).
"""

from __future__ import annotations

import torch

from ..models.mini.stack import load_stack
from ..models.mini.world import downsample
from .base import Purifier, register_purifier


@torch.no_grad()
def vq_restore(vq, x: torch.Tensor) -> torch.Tensor:
    """Codebook restoration of ``B x 3 x 32 x 32`` photos in [0, 1]."""
    return ((vq.decode(vq.encode(x * 2 - 1).latents).sample + 1) / 2).clamp(0, 1)


def codesr(stack, x: torch.Tensor, pre_size: int = 16, restore: bool = True, sr: bool = True) -> torch.Tensor:
    """CodeSR on the mini stack (the ``codesr-mini`` purifier): codebook restoration of ``B x 3 x 32 x 32``
    photos in [0, 1], then downsize to ``pre_size`` px and SR x2 back to 32 px."""
    if restore:
        x = vq_restore(stack.vq, x)
    if sr:
        x = downsample(stack.sr(downsample(x, pre_size)).clamp(0, 1), 32)
    return x


@register_purifier
class CodeSRMini(Purifier):
    name = "codesr-mini"
    paper = "CodeSR (Liu et al., arXiv 2406.18944) on the mini stack: VQ codebook restoration + SR x2"
    reference = ""  # our mini-world construction
    requires = ("spandrel",)  # the mini stack's SR net is spandrel's Compact
    options = {"pre_size": 16, "restore": True, "sr": True}

    @torch.no_grad()
    def purify(self, images):
        x = codesr(load_stack(), downsample(images, 32), int(self.pre_size), bool(self.restore), bool(self.sr))
        return downsample(x, images.shape[-1])
