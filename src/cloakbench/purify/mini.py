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

from .base import Purifier, register_purifier


@register_purifier
class CodeSRMini(Purifier):
    name = "codesr-mini"
    paper = "CodeSR (Liu et al., arXiv 2406.18944) on the mini stack: VQ codebook restoration + SR x2"
    options = {"pre_size": 16, "restore": True, "sr": True}

    @torch.no_grad()
    def purify(self, images):
        from ..mini.stack import load_stack
        from ..mini.train import downsample
        from ..mini.validate import codesr

        x = codesr(load_stack(), downsample(images, 32), int(self.pre_size), bool(self.restore), bool(self.sr))
        return downsample(x, images.shape[-1])
