"""The pixel diffusion model and what DiffPure, GrIDPure and DDSPure share (not a purifier itself).

The pixel model is configuration: a diffusers DDPM folder or hub id with ``unet/`` and ``scheduler/``
(default ``google/ddpm-ema-celebahq-256``, a 256 px face model), or the references' OpenAI ADM 256
unconditional checkpoint (``model: adm-256-uncond`` from the weights manager, or a path to a ``.pt``;
:mod:`.adm`). Images work in [-1, 1] inside (``units="reference"``: DiffShortcut's [0, 1], see
:func:`.pixel_diffpure.diffpure`).

Here: loading it (:func:`load_pixel_model`, a tiny random one for tests), the base class of the three
purifiers, the overlapping-window tiling (:func:`grid_purify`), one seeded generator per window
(:func:`tile_generators`) and DiffShortcut's settings of the three (:data:`PAPER_OPTIONS`). The methods:
:mod:`.pixel_diffpure` (``pixel-diffpure``), :mod:`.gridpure`, :mod:`.ddspure`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from .adm import ADM_256_UNCOND
from .base import Purifier

DEFAULT_PIXEL_MODEL = "google/ddpm-ema-celebahq-256"
ADM_MODELS = {"adm-256-uncond": ADM_256_UNCOND}  # weights-manager names of ADM checkpoints -> architecture

# DiffShortcut's settings for its pixel baselines (docs/PAPER.md §9), on the ADM 256 unconditional model with
# timestep_respacing "250" (diffshortcut/defenses/gridpure.py:16) and 256 px windows at stride 128 without a
# corner mosaic (gridpure.py:118, 136-137); images fed in [0, 1] (gridpure.py:53-58: Normalize commented out).
PAPER_OPTIONS: dict[str, dict] = {
    "gridpure": {"model": "adm-256-uncond", "respacing": 250, "t_star": 10, "steps": 10, "iterations": 10,
                 "gamma": 0.1, "tile": 256, "stride": 128, "corners": False, "units": "reference"},  # gridpure.py:176
    "pixel-diffpure": {"model": "adm-256-uncond", "respacing": 250, "t_star": 100, "steps": 100, "tile": 256,
                       "stride": 128, "units": "reference"},  # pdiffp.py:19: t=100, gamma 0, 1 iteration
    # ddspure.py: --perturb_r 11 (:156) -> delta 11/255 -> t = 10 (:104-117), a respaced index: q_sample to 10 and
    # p_sample 10 .. 1 on the 250-step chain (:16, 119-135), [0, 1] inputs (:53-58), PIL default (bicubic)
    # resizes to 256 and back (:167, 169), 1 iteration (:168)
    "ddspure": {"model": "adm-256-uncond", "mode": "chain", "respacing": 250, "radius": 11 / 255, "units": "reference",
                "size": 256, "iterations": 1, "interpolation": "bicubic"},
}


@functools.lru_cache(maxsize=2)
def load_pixel_model(source: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``(UNet2DModel, DDPMScheduler)`` from a DDPM folder or hub id (``"mini"``: the mini stack's 16 px
    pixel DDPM), or ``(AdmUNet, AdmDiffusion)`` for ``"adm-256-uncond"`` (the weights manager's file; a
    :class:`~cloakbench.weights.MissingWeightError` saying how to fetch it when absent) or a ``.pt`` path
    of that checkpoint; a clear error when unavailable."""
    from diffusers import DDPMScheduler, UNet2DModel

    from ..errors import ModelLoadError
    from ..models.hub import offline as _offline

    if source == "mini":
        from ..models.mini.stack import load_stack

        return load_stack().pixel_model()
    if source in ADM_MODELS or source.endswith((".pt", ".pth")):
        from .. import weights
        from .adm import load_adm

        path = weights.resolve(source) if source in ADM_MODELS else source
        if not os.path.isfile(path):
            raise ModelLoadError(f"ADM checkpoint {source!r} not found; use model 'adm-256-uncond' (`cloakbench "
                                 f"weights fetch adm-256-uncond`) or a path to 256x256_diffusion_uncond.pt")
        return load_adm(str(path), device, dtype, ADM_MODELS.get(source, ADM_256_UNCOND))

    local = os.path.isdir(source)
    try:
        unet = UNet2DModel.from_pretrained(source, subfolder="unet", local_files_only=local or _offline())
        sched = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local or _offline())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"pixel diffusion model {source!r} is not available{' offline' if _offline() else ''}: "
                             f"pass a local DDPM folder (unet/, scheduler/) ({type(exc).__name__})") from exc
    return unet.to(device, dtype).eval().requires_grad_(False), sched


def build_tiny_pixel_model(seed: int = 0, size: int = 64):
    """Random tiny ``UNet2DModel`` + DDPM scheduler (tests; the real architecture class)."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    return unet.eval().requires_grad_(False), DDPMScheduler(num_train_timesteps=1000)



def tile_positions(size: int, tile: int, stride: int) -> list[int]:
    """Window starts covering ``[0, size)`` with ``tile`` windows at ``stride`` (last one flush with the end)."""
    if size <= tile:
        return [0]
    pos = list(range(0, size - tile + 1, stride))
    if pos[-1] != size - tile:
        pos.append(size - tile)
    return pos


def grid_purify(x: torch.Tensor, fn: Callable[[torch.Tensor, list[int]], torch.Tensor], tile: int = 256,
                stride: int = 128, corners: bool = True, batch: int = 0) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles (and a mosaic of the four corners) and average the overlaps.

    ``fn(tiles, keys)`` gets ``N x C x tile x tile`` windows and one integer key per window (window ``k`` of
    image ``b`` has key ``k * B + b``), so a random ``fn`` can seed each window alone and give the same
    result however the windows are batched. ``batch``: windows per call (0: all of them in one call).
    """
    b, _, h, w = x.shape
    acc, cnt = torch.zeros_like(x), torch.zeros_like(x[:, :1])
    boxes = [(y, xx) for y in tile_positions(h, tile, stride) for xx in tile_positions(w, tile, stride)]
    windows = [x[..., y : y + tile, xx : xx + tile] for y, xx in boxes]
    c = tile // 2
    mosaic = corners and h >= tile and w >= tile
    if mosaic:
        windows.append(torch.cat([torch.cat([x[..., :c, :c], x[..., :c, -c:]], -1),
                                  torch.cat([x[..., -c:, :c], x[..., -c:, -c:]], -1)], -2))
    tiles = torch.cat(windows)  # window-major: window k of image j at row k * B + j
    step = batch or tiles.shape[0]
    out = torch.cat([fn(tiles[i : i + step], list(range(i, min(i + step, tiles.shape[0]))))
                     for i in range(0, tiles.shape[0], step)])
    for k, (y, xx) in enumerate(boxes):
        acc[..., y : y + tile, xx : xx + tile] += out[k * b : (k + 1) * b]
        cnt[..., y : y + tile, xx : xx + tile] += 1
    if mosaic:
        p = out[len(boxes) * b :]
        for (sy, sx), (dy, dx) in zip([(0, 0), (0, c), (c, 0), (c, c)], [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c)]):
            acc[..., dy : dy + c, dx : dx + c] += p[..., sy : sy + c, sx : sx + c]
            cnt[..., dy : dy + c, dx : dx + c] += 1
    return acc / cnt


def tile_generators(seed: int, round_: int, keys: list[int]) -> list[torch.Generator]:
    """One generator per window, seeded by (seed, round, window key): results do not depend on batching."""
    import numpy as np

    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, round_, k]).generate_state(1)[0]))
            for k in keys]


class PixelPurifier(Purifier):
    """Base of the pixel diffusion purifiers: loads ``model`` (cached), or takes ``pixel_model``, a ``(unet, scheduler)`` pair."""

    def __init__(self, **kw):
        super().__init__(**kw)
        if getattr(self, "pixel_model", None) is None:
            self.unet, self.sched = load_pixel_model(str(self.model), str(self.device or "cpu"), self.model_dtype())
        else:
            self.unet, self.sched = self.pixel_model

