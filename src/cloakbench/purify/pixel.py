"""Pixel-space diffusion purification: DiffPure, GrIDPure and DDSPure on a diffusers ``UNet2DModel``.

The pixel model is configuration (a diffusers DDPM folder or hub id with ``unet/`` and ``scheduler/``;
default ``google/ddpm-ema-celebahq-256``, a 256 px face model; the references use OpenAI's ADM 256
unconditional checkpoint, a different format). Images work in [-1, 1] inside.

* DiffPure (Nie et al., ICML 2022): diffuse to ``t_star`` and run the reverse chain back to 0
  (``steps`` evenly spaced DDPM steps), patch-wise with 256 px windows, stride 128, averaged.
* GrIDPure (Zhao et al., 2024, ``ZhengyueZhao/GrIDPure``): 256 px tiles at stride 128 plus one mosaic
  of the four 128 px corners, each DiffPure'd with a few steps; overlaps averaged; then
  ``x <- (1 - gamma) * pure + gamma * x``, iterated (10 steps, 20 iterations, gamma 0.1).
* DDSPure (Carlini et al., ICLR 2023; DiffShortcut): resize to 256, one-shot denoise at the t where
  ``alpha_bar_t ~ 1 / (1 + sigma^2)``, resize back. ``units="reference"`` uses sigma = r/255 as
  DiffShortcut; ``"consistent"`` uses 2r/255, the matching sigma in [-1, 1] (docs/PROTECTIONS.md §4).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .base import Purifier, register_purifier

DEFAULT_PIXEL_MODEL = "google/ddpm-ema-celebahq-256"


@functools.lru_cache(maxsize=2)
def load_pixel_model(source: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``(UNet2DModel, DDPMScheduler)`` from a DDPM folder or hub id (``"mini"``: the mini stack's 16 px
    pixel DDPM); a clear error when unavailable."""
    from diffusers import DDPMScheduler, UNet2DModel

    if source == "mini":
        from ..models.mini.stack import load_stack

        return load_stack().pixel_model()

    from ..models.loading import ModelLoadError, _offline

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


@torch.no_grad()
def diffpure(unet, sched, x: torch.Tensor, t_star: int, steps: int,
             gen: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """Diffuse ``x`` (``B x 3 x h x w`` in [0, 1]) to ``t_star`` and denoise back with ``steps`` DDPM steps;
    ``gen`` one generator, or one per image (then each image's noise is its own, whatever the batch)."""
    from diffusers import DDPMScheduler

    if t_star <= 0:
        return x
    s = DDPMScheduler.from_config(sched.config)
    ts = torch.linspace(t_star, 0, steps + 1)[:-1].round().long().unique_consecutive().tolist()
    s.set_timesteps(timesteps=ts)
    dev, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
    z = x.to(dev, dtype) * 2 - 1
    if isinstance(gen, list):  # one generator per image: the same noise whatever the batch
        noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gen]).to(z)
    else:
        noise = torch.randn(z.shape, generator=gen).to(z)
    z = s.add_noise(z, noise, torch.full((z.shape[0],), ts[0], dtype=torch.long, device=dev))
    for t in s.timesteps:
        eps = unet(z, t).sample
        z = s.step(eps, t, z, generator=gen).prev_sample
    return ((z.float() + 1) / 2).clamp(0, 1).cpu()


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


class _Pixel(Purifier):
    def __init__(self, **kw):
        super().__init__(**kw)
        if getattr(self, "pixel_model", None) is None:
            self.unet, self.sched = load_pixel_model(str(self.model), str(self.device or "cpu"), self.model_dtype())
        else:
            self.unet, self.sched = self.pixel_model


@register_purifier
class PixelDiffPure(_Pixel):
    name = "pixel-diffpure"
    paper = "Nie et al., Diffusion Models for Adversarial Purification (DiffPure), ICML 2022"
    half = "fp16"  # the reference's guided-diffusion ADM runs in fp16 (PAPER.md §9)
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "t_star": 100, "steps": 100, "tile": 256, "stride": 128,
               "tile_batch": 0}

    def purify(self, images):
        fn = lambda t, keys: diffpure(self.unet, self.sched, t, int(self.t_star), int(self.steps),  # noqa: E731
                                      tile_generators(self.seed, 0, keys))
        return grid_purify(images, fn, int(self.tile), int(self.stride), corners=False, batch=int(self.tile_batch))


@register_purifier
class GrIDPure(_Pixel):
    name = "gridpure"
    paper = "Zhao et al., Can Protective Perturbation Safeguard Personal Data from Being Exploited by Stable Diffusion? (GrIDPure), CVPR 2024"
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "t_star": 10, "steps": 10, "iterations": 20,
               "gamma": 0.1, "tile": 256, "stride": 128, "tile_fn": None, "tile_batch": 0}

    def purify(self, images):
        """``iterations`` rounds; in each, every tile of every image goes through one batched UNet call
        (``tile_batch`` > 0: that many tiles per call), each tile with its own seeded noise."""
        x = images
        for it in range(int(self.iterations)):
            if self.tile_fn is not None:
                fn = lambda t, keys: self.tile_fn(t)  # noqa: E731
            else:
                fn = lambda t, keys, it=it: diffpure(self.unet, self.sched, t, int(self.t_star), int(self.steps),  # noqa: E731
                                                     tile_generators(self.seed, it, keys))
            pure = grid_purify(x, fn, int(self.tile), int(self.stride), batch=int(self.tile_batch))
            x = (1 - self.gamma) * pure + self.gamma * x
        return x

    def __init__(self, **kw):
        if kw.get("tile_fn") is not None and kw.get("pixel_model") is None:
            kw["pixel_model"] = (None, None)  # a custom tile function needs no diffusion model
        super().__init__(**kw)


@register_purifier
class DDSPure(_Pixel):
    name = "ddspure"
    paper = "Carlini et al., (Certified!!) Adversarial Robustness for Free! (diffusion denoised smoothing), ICLR 2023"
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "radius": 11 / 255, "units": "reference", "size": 256}

    def timestep(self) -> int:
        sigma = float(self.radius) * (2.0 if self.units == "consistent" else 1.0)
        if self.units not in ("reference", "consistent"):
            raise ValueError(f"units must be 'reference' or 'consistent', not {self.units!r}")
        target = 1.0 / (1.0 + sigma**2)
        return int((self.sched.alphas_cumprod - target).abs().argmin())

    @torch.no_grad()
    def purify(self, images):
        h, w = images.shape[-2:]
        t = self.timestep()
        dev = next(self.unet.parameters()).device
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        z = x.to(dev) * 2 - 1
        a = self.sched.alphas_cumprod[t].to(z)
        noise = torch.randn(z.shape, generator=self.generator()).to(z)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        eps = self.unet(zt, torch.full((z.shape[0],), t, device=dev)).sample
        x0 = ((zt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        out = F.interpolate(((x0 + 1) / 2).cpu(), size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp(0, 1)
