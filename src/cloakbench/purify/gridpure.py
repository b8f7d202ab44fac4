"""GrIDPure (Zhao et al., 2024, ``ZhengyueZhao/GrIDPure``; DiffShortcut ``defenses/gridpure.py``).

256 px tiles at stride 128 plus one mosaic of the four 128 px corners, each DiffPure'd
(:func:`.pixel_diffpure.diffpure`) with a few steps; overlaps averaged; then
``x <- (1 - gamma) * pure + gamma * x``, iterated (10 steps, 20 iterations, gamma 0.1).
:data:`.pixel_diffusion.PAPER_OPTIONS` holds DiffShortcut's settings (docs/PROTECTIONS.md §3): ADM, 250 respaced
steps, t = 10 respaced, 10 iterations, 9 tiles on 512 px, no corner mosaic, [0, 1] model inputs.
"""

from __future__ import annotations

from .base import register_purifier
from .pixel_diffpure import diffpure
from .pixel_diffusion import DEFAULT_PIXEL_MODEL, PixelPurifier, grid_purify, tile_generators


@register_purifier
class GrIDPure(PixelPurifier):
    name = "gridpure"
    paper = "Zhao et al., Can Protective Perturbation Safeguard Personal Data from Being Exploited by Stable Diffusion? (GrIDPure), CVPR 2024"
    reference = "ZhengyueZhao/GrIDPure gridpure.py"  # the defaults; PAPER_OPTIONS: DiffShortcut's
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


