"""Pixel-space diffusion purification: DiffPure, GrIDPure and DDSPure on a pixel diffusion model.

The pixel model is configuration: a diffusers DDPM folder or hub id with ``unet/`` and ``scheduler/``
(default ``google/ddpm-ema-celebahq-256``, a 256 px face model), or the references' OpenAI ADM 256
unconditional checkpoint (``model: adm-256-uncond`` from the weights manager, or a path to a ``.pt``;
:mod:`.adm`). Images work in [-1, 1] inside (``units="reference"``: DiffShortcut's [0, 1], see below).

* DiffPure (Nie et al., ICML 2022): diffuse to ``t_star`` and run the reverse chain back to 0
  (``steps`` evenly spaced DDPM steps), patch-wise with 256 px windows, stride 128, averaged.
* GrIDPure (Zhao et al., 2024, ``ZhengyueZhao/GrIDPure``): 256 px tiles at stride 128 plus one mosaic
  of the four 128 px corners, each DiffPure'd with a few steps; overlaps averaged; then
  ``x <- (1 - gamma) * pure + gamma * x``, iterated (10 steps, 20 iterations, gamma 0.1).
  :data:`PAPER_OPTIONS` holds DiffShortcut's settings (docs/PROTECTIONS.md §3): ADM, 250 respaced
  steps, t = 10 respaced, 10 iterations, 9 tiles on 512 px, no corner mosaic, [0, 1] model inputs.
* DDSPure (Carlini et al., ICLR 2023; DiffShortcut): resize to 256, one-shot denoise at the t where
  ``alpha_bar_t ~ 1 / (1 + sigma^2)``, resize back. ``units="reference"`` uses sigma = r/255 as
  DiffShortcut; ``"consistent"`` uses 2r/255, the matching sigma in [-1, 1] (docs/PROTECTIONS.md §4).
  ``mode="chain"`` (in :data:`PAPER_OPTIONS`) is DiffShortcut's reading: its t as a respaced index of 250
  and a reverse chain from there, on [0, 1] inputs, bicubic resizes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .adm import ADM_256_UNCOND, AdmDiffusion
from .base import Purifier, register_purifier

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

    from ..models.loading import ModelLoadError, _offline

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


def _randn(like: torch.Tensor, gen: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise of ``like``'s shape, dtype and device; with one generator per image, each
    image's noise is its own whatever the batch."""
    if isinstance(gen, list):
        return torch.cat([torch.randn((1, *like.shape[1:]), generator=g) for g in gen]).to(like)
    return torch.randn(like.shape, generator=gen).to(like)


@torch.no_grad()
def diffpure(unet, sched, x: torch.Tensor, t_star: int, steps: int, gen: torch.Generator | list[torch.Generator],
             respacing: int = 0, units: str = "consistent") -> torch.Tensor:
    """Diffuse ``x`` (``B x 3 x h x w`` in [0, 1]) to ``t_star`` and denoise back with ``steps`` DDPM steps;
    ``gen`` one generator, or one per image (then each image's noise is its own, whatever the batch).

    With an ADM (:class:`~.adm.AdmDiffusion` scheduler) the eps channels of the learned-sigma output drive
    the mean and the variance channels the noise; ``respacing`` = N > 0 (ADM only) takes DiffShortcut's
    reading, ``t_star`` a respaced index of N steps (:meth:`~.adm.AdmDiffusion.chain`).
    ``units``: ``"consistent"`` maps [0, 1] to the model's [-1, 1] and back; ``"reference"`` feeds [0, 1]
    as is and reads the output as [0, 1], as DiffShortcut (``gridpure.py:53-58, 110``; results clamped)."""
    from diffusers import DDPMScheduler

    if units not in ("consistent", "reference"):
        raise ValueError(f"units must be 'consistent' or 'reference', not {units!r}")
    if t_star <= 0:
        return x
    dev, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
    if isinstance(sched, AdmDiffusion):
        z0 = x.to(dev, torch.float32)
        z0 = z0 * 2 - 1 if units == "consistent" else z0
        z = sched.purify(unet, z0, t_star, steps, lambda: _randn(z0, gen), respacing)
    else:
        if respacing:
            raise ValueError("respacing follows guided-diffusion's SpacedDiffusion: it needs an ADM model")
        s = DDPMScheduler.from_config(sched.config)
        ts = torch.linspace(t_star, 0, steps + 1)[:-1].round().long().unique_consecutive().tolist()
        s.set_timesteps(timesteps=ts)
        z = x.to(dev, dtype)
        z = z * 2 - 1 if units == "consistent" else z
        z = s.add_noise(z, _randn(z, gen), torch.full((z.shape[0],), ts[0], dtype=torch.long, device=dev))
        for t in s.timesteps:
            eps = unet(z, t).sample
            z = s.step(eps, t, z, generator=gen).prev_sample
    z = z.float()
    return ((z + 1) / 2 if units == "consistent" else z).clamp(0, 1).cpu()


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
               "tile_batch": 0, "respacing": 0, "units": "consistent"}

    def purify(self, images):
        fn = lambda t, keys: diffpure(self.unet, self.sched, t, int(self.t_star), int(self.steps),  # noqa: E731
                                      tile_generators(self.seed, 0, keys), int(self.respacing), self.units)
        return grid_purify(images, fn, int(self.tile), int(self.stride), corners=False, batch=int(self.tile_batch))


@register_purifier
class GrIDPure(_Pixel):
    name = "gridpure"
    paper = "Zhao et al., Can Protective Perturbation Safeguard Personal Data from Being Exploited by Stable Diffusion? (GrIDPure), CVPR 2024"
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "t_star": 10, "steps": 10, "iterations": 20,
               "gamma": 0.1, "tile": 256, "stride": 128, "corners": True, "tile_fn": None, "tile_batch": 0,
               "respacing": 0, "units": "consistent"}

    def purify(self, images):
        """``iterations`` rounds; in each, every tile of every image goes through one batched UNet call
        (``tile_batch`` > 0: that many tiles per call), each tile with its own seeded noise. ``corners``:
        add the mosaic of the four corners (GrIDPure's repo; DiffShortcut has none). ``tile_fn(tiles)``
        replaces the diffusion (tests)."""
        x = images
        for it in range(int(self.iterations)):
            if self.tile_fn is not None:
                fn = lambda t, keys: self.tile_fn(t)  # noqa: E731
            else:
                fn = lambda t, keys, it=it: diffpure(  # noqa: E731
                    self.unet, self.sched, t, int(self.t_star), int(self.steps), tile_generators(self.seed, it, keys),
                    int(self.respacing), self.units)
            pure = grid_purify(x, fn, int(self.tile), int(self.stride), corners=bool(self.corners),
                               batch=int(self.tile_batch))
            x = (1 - self.gamma) * pure + self.gamma * x
        return x

    def __init__(self, **kw):
        if kw.get("tile_fn") is not None and kw.get("pixel_model") is None:
            kw["pixel_model"] = (None, None)  # a custom tile function needs no diffusion model
        super().__init__(**kw)


@register_purifier
class DDSPure(_Pixel):
    """Diffusion denoised smoothing: resize to ``size``, denoise at the t matching the perturbation size
    (``alpha_bar_t ~ 1 / (1 + sigma^2)``), resize back.

    * ``mode="oneshot"`` (default): one x0 estimate at the nearest original step (argmin of
      ``|alpha_bar - target|`` on the model's schedule), model in [-1, 1]; ``units`` only sets sigma
      (``"reference"``: r/255 as DiffShortcut, ``"consistent"``: 2r/255, the matching sigma in [-1, 1]).
    * ``mode="chain"``: DiffShortcut's ``ddspure.py``. t comes from its rule (:meth:`reference_timestep`,
      ``ddspure.py:96-117``): the 1-based index of the nearest entry of the *1000-step* linear table (r = 11:
      t = 10). With ``respacing`` = 250 (``ddspure.py:16``) that t is a *respaced* index: ``q_sample`` to
      respaced step t (original 4t for t <= 41: 40 for t = 10), then one ``p_sample`` per respaced step
      t .. 1, stopping before 0 (``ddspure.py:119-135``), as :func:`diffpure` with ``t_star = steps = t``;
      ``units="reference"`` feeds [0, 1] (``ddspure.py:53-58``). ``respacing`` = 0: t original steps down
      to 1, then the noiseless step. Each image has its own seeded noise (:func:`tile_generators`, round = iteration).
    * ``interpolation``: ``"bilinear"`` (default: antialiased to ``size``, plain bilinear back) or
      ``"bicubic"`` (antialiased bicubic both ways, clamped: PIL's default ``Image.resize`` filter, which the
      reference uses at ``ddspure.py:167, 169``; within 1/255 of PIL on natural images, which PIL rounds to
      8 bits between its two passes).
    * ``iterations``: denoising rounds at ``size`` (the reference's ``DDSpure(..., iterations=1)``,
      ``ddspure.py:168``; its function default is 10, ``:143``).
    """

    name = "ddspure"
    paper = "Carlini et al., (Certified!!) Adversarial Robustness for Free! (diffusion denoised smoothing), ICLR 2023"
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "radius": 11 / 255, "units": "reference", "size": 256,
               "mode": "oneshot", "respacing": 0, "iterations": 1, "interpolation": "bilinear"}

    def __init__(self, **kw):
        super().__init__(**kw)
        if self.mode not in ("oneshot", "chain"):
            raise ValueError(f"mode must be 'oneshot' or 'chain', not {self.mode!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', not {self.interpolation!r}")
        if self.mode == "oneshot" and int(self.respacing):
            raise ValueError("respacing applies to mode='chain' (the one-shot denoise takes one original step)")

    @staticmethod
    def reference_timestep(target: float, alphas_cumprod: torch.Tensor | None = None) -> int:
        """DiffShortcut's choice of t for ``alpha_bar ~ target`` (``ddspure.py:104-117``) on ``alphas_cumprod``
        (default: the linear 1000-step table, ``ddspure.py:96-102``, the ADM's, float64): of the two entries
        around the target, the nearer (a tie goes to the later one), numbered **from 1**; 1 when the target is
        above the first entry, ``len`` when at or below the last. For r = 11/255 entry 9 (0-based, alpha_bar
        0.998105) is nearest, so t = 10."""
        table = (AdmDiffusion().alphas_cumprod if alphas_cumprod is None else alphas_cumprod).tolist()
        if target > table[0]:
            return 1
        if target <= table[-1]:
            return len(table)
        below = next(i for i, a in enumerate(table) if a < target)  # >= 1: table[0] >= target here
        nearest = below - 1 if table[below - 1] - target < target - table[below] else below
        return nearest + 1

    def timestep(self) -> int:
        sigma = float(self.radius) * (2.0 if self.units == "consistent" else 1.0)
        if self.units not in ("reference", "consistent"):
            raise ValueError(f"units must be 'reference' or 'consistent', not {self.units!r}")
        target = 1.0 / (1.0 + sigma**2)
        if self.mode == "chain":
            return self.reference_timestep(target)
        return int((self.sched.alphas_cumprod - target).abs().argmin())

    def resize(self, x: torch.Tensor, size: tuple[int, int], back: bool) -> torch.Tensor:
        """``x`` to ``size`` with :attr:`interpolation` (``back``: the resize to the input size)."""
        if self.interpolation == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", antialias=not back, align_corners=False)
        if tuple(x.shape[-2:]) == tuple(size):  # PIL returns an unchanged copy
            return x
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)

    @torch.no_grad()
    def purify(self, images):
        h, w = images.shape[-2:]
        t = self.timestep()
        x = self.resize(images, (self.size, self.size), back=False)
        gen = self.generator()
        for it in range(int(self.iterations)):
            if self.mode == "chain":
                gens = tile_generators(self.seed, it, list(range(x.shape[0])))
                x = diffpure(self.unet, self.sched, x, t, t, gens, int(self.respacing), self.units)
            else:
                x = self._oneshot(x, t, gen)
        return self.resize(x, (h, w), back=True).clamp(0, 1)

    def _oneshot(self, x: torch.Tensor, t: int, gen: torch.Generator) -> torch.Tensor:
        dev = next(self.unet.parameters()).device
        z = x.to(dev) * 2 - 1
        a = self.sched.alphas_cumprod[t].to(z)
        noise = torch.randn(z.shape, generator=gen).to(z)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        out = self.unet(zt, torch.full((z.shape[0],), t, device=dev))
        eps = getattr(out, "sample", out)[:, :3]  # an ADM's learned-sigma output: the first 3 channels are eps
        x0 = ((zt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        return ((x0 + 1) / 2).cpu()
