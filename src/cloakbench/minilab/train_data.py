"""The world data of mini training and validation: budgets (:data:`FULL`, :data:`QUICK`), photos of the
training and held-out subjects (:class:`Data`) and each model's own random stream (:class:`Stream`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..models.mini import world


@dataclass(frozen=True)
class MiniTrainConfig:
    seed: int = 0
    per_subject: int = 32
    clip_steps: int = 1000
    vae_steps: int = 800
    unet_steps: int = 7500
    pixel_steps: int = 400
    vq_steps: int = 200
    vq_restore_steps: int = 150
    sr_steps: int = 600
    id_steps: int = 500
    val_per_subject: int = 8
    val_sample_subjects: int = 60  # calibration subjects whose full caption the base model draws (all 60)
    val_samples_per_subject: int = 8  # samples of each (480 in all; 576 over all 72 held-out until #31; 2 until 2026-12-07)
    readout_steps: int = 400  # the attribute read-out that reads those samples


FULL = MiniTrainConfig()
QUICK = MiniTrainConfig(per_subject=2, clip_steps=3, vae_steps=3, unet_steps=3, pixel_steps=2, vq_steps=2,
                        vq_restore_steps=2, sr_steps=2, id_steps=3, val_per_subject=2,
                        val_sample_subjects=4, val_samples_per_subject=2, readout_steps=3)


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


class Data:
    """Training photos (uint8, subject-major), their subjects, and validation photos of the *calibration*
    subjects (:func:`world.calibration_subjects`: held out, and neither evaluation nor development subjects,
    so the verification threshold and the UNet's ship rule see no subject a claim or a recipe is measured on;
    all 72 held-out subjects until #31)."""

    def __init__(self, cfg: MiniTrainConfig) -> None:
        x, y = world.dataset(world.train_subjects(), cfg.per_subject, cfg.seed)
        self.x, self.y = _u8(x), y
        vx, vy = world.dataset(world.calibration_subjects(), cfg.val_per_subject, cfg.seed + 1000)
        self.vx, self.vy = vx, vy
        self.seed = cfg.seed

    def stream(self, name: str) -> "Stream":
        """The random stream of one model (its batches, noise and timesteps), seeded by (seed, CRC-32 of the name)."""
        return Stream(self, int(np.random.SeedSequence([self.seed, zlib.crc32(name.encode())]).generate_state(1)[0]))


class Stream:
    """One model's draws from :class:`Data`: its own numpy RNG and torch generator."""

    def __init__(self, data: Data, seed: int) -> None:
        self.x, self.y = data.x, data.y
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.rng.integers(0, len(self.x), n))
        return self.x[idx].float() / 255, self.y[idx]

    def negatives(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """Photos with no toy: plain backgrounds, or backgrounds under a strong structured noise."""
        out, caps = [], []
        for _ in range(n):
            bg = world.background(self.rng)
            if self.rng.random() < 0.5:
                pat = world.sign_noise(int(self.rng.integers(1, 4)), self.gen)
                bg = (bg + self.rng.uniform(16, 64) / 255 * pat).clamp(0, 1)
                caps.append("a photo of noise pattern")
            else:
                caps.append("a photo of background")
            out.append(bg)
        return torch.stack(out), caps
