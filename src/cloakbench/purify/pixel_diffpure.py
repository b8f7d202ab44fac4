"""Pixel-space DiffPure (Nie et al., ICML 2022; DiffShortcut ``defenses/pdiffp.py``): the ``pixel-diffpure`` purifier.

Diffuse to ``t_star`` and run the reverse chain back to 0 (``steps`` evenly spaced DDPM steps),
patch-wise with 256 px windows, stride 128, averaged. :func:`diffpure`, the diffuse-and-denoise chain,
is also the inner step of GrIDPure (:mod:`.gridpure`) and of DDSPure's ``mode="chain"`` (:mod:`.ddspure`).
The pixel model, the tiling and the seeds: :mod:`.pixel_diffusion`.
"""

from __future__ import annotations

import torch

from .adm import AdmDiffusion
from .base import register_purifier
from .pixel_diffusion import DEFAULT_PIXEL_MODEL, PixelPurifier, grid_purify, tile_generators


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



@register_purifier
class PixelDiffPure(PixelPurifier):
    name = "pixel-diffpure"
    paper = "Nie et al., Diffusion Models for Adversarial Purification (DiffPure), ICML 2022"
    reference = "liuyixin-louis/DiffShortcut diffshortcut/defenses/pdiffp.py"
    half = "fp16"  # the reference's guided-diffusion ADM runs in fp16 (PAPER.md §9)
    options = {"model": DEFAULT_PIXEL_MODEL, "pixel_model": None, "t_star": 100, "steps": 100, "tile": 256, "stride": 128,
               "tile_batch": 0, "respacing": 0, "units": "consistent"}

    def purify(self, images):
        fn = lambda t, keys: diffpure(self.unet, self.sched, t, int(self.t_star), int(self.steps),  # noqa: E731
                                      tile_generators(self.seed, 0, keys), int(self.respacing), self.units)
        return grid_purify(images, fn, int(self.tile), int(self.stride), corners=False, batch=int(self.tile_batch))

