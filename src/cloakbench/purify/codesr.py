"""CodeSR (arXiv 2406.18944 §4, docs/PAPER.md §4): CodeFormer face restoration, then super-resolution.

``codesr`` is the paper's: CodeFormer (w = 0.5, background x2) then the SD x4 upscaler from 128 px
(75 steps, guidance 9, noise level 20) -> 512 px. ``codesr-fast`` swaps stage 2 for Real-ESRGAN
x4plus on ncnn (offline, CPU). Options are passed to the stage that owns them.
"""

from __future__ import annotations

from .base import Compose, Purifier, register_purifier
from .codeformer import CodeFormerStage
from .realesrgan import RealESRGAN
from .sd_upscaler import SDUpscaler


def _split(kw: dict, cls: type[Purifier]) -> dict:
    return {k: v for k, v in kw.items() if k in cls.options or k in ("seed", "device", "dtype")}


class _CodeSRBase(Compose):
    differentiable = False
    stage2: type[Purifier] = SDUpscaler
    stage1_options = ("weights", "fidelity", "upscale", "upsample", "detector")

    def __init__(self, **kw):
        s1 = {k: v for k, v in kw.items() if k in self.stage1_options or k in ("seed", "device", "dtype")}
        s2 = _split({k: v for k, v in kw.items() if k not in self.stage1_options}, self.stage2)
        unknown = set(kw) - set(s1) - set(s2)
        if unknown:
            raise TypeError(f"{self.name}: unknown option(s) {', '.join(sorted(unknown))}")
        name = self.name
        super().__init__([CodeFormerStage(**s1), self.stage2(**s2)])
        self.name = name


@register_purifier
class CodeSR(_CodeSRBase):
    name = "codesr"
    paper = "Liu et al., Rethinking and Red-Teaming Protective Perturbation in Personalized Diffusion Models (CodeSR)"
    reference = "liuyixin-louis/DiffShortcut scripts/sub/defense/controller.sh"  # code-sr: code.sh, sr.sh
    requires = CodeFormerStage.requires
    stage2 = SDUpscaler


@register_purifier
class CodeSRFast(_CodeSRBase):
    name = "codesr-fast"
    paper = "CodeSR with Real-ESRGAN x4plus (ncnn, offline) as stage 2"
    reference = ""  # our offline variant of CodeSR
    requires = CodeFormerStage.requires + RealESRGAN.requires
    stage2 = RealESRGAN
