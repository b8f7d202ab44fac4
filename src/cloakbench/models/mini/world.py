"""The mini world: procedural toys, one subject per attribute combination, deterministic from a seed.

A *subject* (identity) is a toy of class ``toy`` defined by four attributes: body ``shape`` (6),
body ``colour`` (8), surface ``pattern`` (4) and ``accent`` colour (3) of the pattern and the two
eyes: 576 subjects. Identity therefore needs shape and texture, not one pixel statistic (the mean
colour names only the body colour). Each *photo* of a subject (world v5) shows the toy centred and
upright on a plain background; it varies only a little: tilt, centre, scale, background colour,
brightness and sensor noise (:data:`POSE`). Captions name the class and
the visible attributes: ``"a photo of a red star toy with white stripes"``.

Subjects with ``index % 8 == 7`` are held out: no mini model sees them in training, so the identity
encoder is validated on them and the demo personalizes on them (novel identities, as DreamBooth).

Units: images are ``B x 3 x 32 x 32`` float in [0, 1] (rendered at 2x and box-filtered, then
quantized to 8 bits like a saved photo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
SHAPES = ("circle", "square", "triangle", "hexagon", "star", "diamond")
COLOURS = {
    "red": (0.85, 0.15, 0.15), "orange": (0.95, 0.55, 0.1), "green": (0.2, 0.65, 0.2), "teal": (0.1, 0.6, 0.6),
    "blue": (0.15, 0.3, 0.85), "purple": (0.55, 0.25, 0.75), "pink": (0.95, 0.5, 0.7), "brown": (0.5, 0.3, 0.15),
}
PATTERNS = ("spots", "stripes", "checks", "rings")
ACCENTS = {"white": (0.97, 0.97, 0.97), "black": (0.05, 0.05, 0.05), "yellow": (0.98, 0.88, 0.1)}
BACKGROUNDS = [(0.80, 0.78, 0.72), (0.62, 0.70, 0.62), (0.70, 0.72, 0.80), (0.55, 0.55, 0.55),
               (0.85, 0.82, 0.85), (0.45, 0.50, 0.45), (0.75, 0.65, 0.55), (0.35, 0.38, 0.45)]
N_SUBJECTS = len(SHAPES) * len(COLOURS) * len(PATTERNS) * len(ACCENTS)
CLASS_WORD = "toy"


@dataclass(frozen=True)
class Subject:
    index: int
    shape: str
    colour: str
    pattern: str
    accent: str

    @property
    def held_out(self) -> bool:
        return self.index % 8 == 7

    def caption(self, prefix: str = "a photo of a") -> str:
        return f"{prefix} {self.colour} {self.shape} {CLASS_WORD} with {self.accent} {self.pattern}"


def subject(index: int) -> Subject:
    """Subject ``index`` in ``[0, N_SUBJECTS)`` (mixed radix over accent, pattern, colour, shape)."""
    if not 0 <= index < N_SUBJECTS:
        raise ValueError(f"subject index must be in [0, {N_SUBJECTS}), got {index}")
    i, a = divmod(index, len(ACCENTS))
    i, p = divmod(i, len(PATTERNS))
    s, c = divmod(i, len(COLOURS))
    return Subject(index, SHAPES[s], list(COLOURS)[c], PATTERNS[p], list(ACCENTS)[a])


def train_subjects() -> list[int]:
    return [i for i in range(N_SUBJECTS) if i % 8 != 7]


def held_out_subjects() -> list[int]:
    return [i for i in range(N_SUBJECTS) if i % 8 == 7]


# The three pools of held-out subjects (no mini model trains on any of them). Each has one use only:
EVALUATION = (7, 183, 239, 279, 351, 415, 503, 527)
"""Claims only: configs/mini-eval.yaml, mini-baselines.yaml and the demo (its first two). Drawn 2026-11-30, before
any result: ``sorted(np.random.default_rng(20261130).choice([s for s in held_out_subjects() if s not in
DEVELOPMENT], 8, replace=False))``. Nothing is fitted or selected on them."""
DEVELOPMENT = (23, 135, 271, 447)
"""Recipes are chosen here (configs/mini-dev.yaml, benchmarks/mini_recipe.py, mini_cdl.py, mini_prior.py)."""


def calibration_subjects() -> list[int]:
    """The held-out subjects of neither :data:`EVALUATION` nor :data:`DEVELOPMENT` (60): thresholds (the
    identity encoder's verification threshold) and model selection (the base UNet's ship rule) are computed
    on these only (#31 item 3)."""
    return [s for s in held_out_subjects() if s not in EVALUATION and s not in DEVELOPMENT]


def _inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Soft-free boolean mask of the unit-radius body in body coordinates ``(u, v)``."""
    r, th = torch.sqrt(u * u + v * v), torch.atan2(v, u)
    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.78
    if shape == "diamond":
        return u.abs() + v.abs() <= 1.05
    if shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        sector = 2 * math.pi / n
        phi = torch.remainder(th + math.pi / 2, sector) - sector / 2
        return r * torch.cos(phi) <= (0.62 if n == 3 else 0.9)
    if shape == "star":
        return r <= 0.62 + 0.38 * torch.cos(5 * (th + math.pi / 2)).clamp(min=0) ** 0.6
    raise ValueError(shape)


def _pattern(pattern: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if pattern == "stripes":
        return torch.sin(math.pi * 3.0 * u) > 0.2
    if pattern == "checks":
        return torch.sin(math.pi * 2.5 * u) * torch.sin(math.pi * 2.5 * v) > 0
    if pattern == "rings":
        return torch.sin(math.pi * 4.0 * torch.sqrt(u * u + v * v)) > 0.3
    if pattern == "spots":
        gu, gv = torch.remainder(u * 1.8, 1.0) - 0.5, torch.remainder(v * 1.8 + 0.25, 1.0) - 0.5
        return gu * gu + gv * gv < 0.09
    raise ValueError(pattern)


POSE = dict(jitter=0.04, scale=(0.70, 0.74), tilt=math.radians(9), light=(0.92, 1.06), noise=3 / 255)
"""Nuisance factors of a photo (v5): centre jitter (fraction of the half-width, 0.04 = 0.6 px), body scale,
in-plane tilt (upright, +-9 degrees), global brightness and sensor noise sigma (in [0, 1] units)."""


def render(sub: Subject, rng: np.random.Generator, size: int = SIZE) -> torch.Tensor:
    """One photo of ``sub``: ``3 x size x size`` in [0, 1], quantized to 8 bits.

    The toy is centred, upright and at one scale on a plain background (one of :data:`BACKGROUNDS`), so
    identity (shape x colour x pattern x accent) is what varies; :data:`POSE` gives the small nuisances
    left. Why this world and not v4's (rotation, scale, position, gradient backgrounds, shadow): the
    measurement in benchmarks/README.md ("Mini world v5")."""
    ss = 2 * size
    ys, xs = torch.meshgrid(torch.arange(ss, dtype=torch.float32), torch.arange(ss, dtype=torch.float32), indexing="ij")
    xs, ys = (xs + 0.5) / ss * 2 - 1, (ys + 0.5) / ss * 2 - 1  # [-1, 1]
    img = torch.tensor(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])[:, None, None].expand(3, ss, ss)
    cx, cy = rng.uniform(-POSE["jitter"], POSE["jitter"], 2)
    scale = rng.uniform(*POSE["scale"])
    rot = rng.uniform(-POSE["tilt"], POSE["tilt"])
    dx, dy = (xs - cx) / scale, (ys - cy) / scale
    u = dx * math.cos(rot) + dy * math.sin(rot)
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    body = _inside(sub.shape, u, v)
    colour = torch.tensor(COLOURS[sub.colour])[:, None, None]
    accent = torch.tensor(ACCENTS[sub.accent])[:, None, None]
    pat = _pattern(sub.pattern, u, v) & body
    eyes = (((u - 0.3) ** 2 + (v + 0.22) ** 2) < 0.025) | (((u + 0.3) ** 2 + (v + 0.22) ** 2) < 0.025)
    eyes = eyes & body
    shade = 1.0 - 0.18 * ((u + v) * 0.5).clamp(-1, 1)  # light from the top left
    img = torch.where(body, colour * shade, img)
    img = torch.where(pat, accent * (0.85 + 0.15 * shade), img)
    img = torch.where(eyes, accent * 0.6 + 0.4 * (1 - accent), img)
    img = F.avg_pool2d(img[None], 2)[0] * rng.uniform(*POSE["light"])
    img = img + torch.from_numpy(rng.normal(0, POSE["noise"], img.shape).astype(np.float32))
    return (img.clamp(0, 1) * 255).round() / 255


def photos(index: int, n: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """``n`` photos of subject ``index`` (``n x 3 x size x size``); the same seed gives the same photos."""
    rng = np.random.default_rng([seed, index, 1])
    sub = subject(index)
    return torch.stack([render(sub, rng, size) for _ in range(n)])


def background(rng: np.random.Generator, size: int = SIZE) -> torch.Tensor:
    """A photo with no toy (a negative for the detector): a plain background with the sensor noise."""
    img = torch.tensor(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])[:, None, None].expand(3, size, size)
    img = img * rng.uniform(*POSE["light"]) + torch.from_numpy(rng.normal(0, POSE["noise"], (3, size, size)).astype(np.float32))
    return (img.clamp(0, 1) * 255).round() / 255


def dataset(subjects: list[int], per_subject: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos of each subject: ``(images N x 3 x 32 x 32, subject labels N)``, subject-major."""
    xs = [photos(s, per_subject, seed) for s in subjects]
    labels = torch.tensor([s for s in subjects for _ in range(per_subject)])
    return torch.cat(xs), labels


# ------------------------------------------------------------------ degradations
def sign_noise(cell: int, gen: torch.Generator, smooth: bool = False, size: int = 32) -> torch.Tensor:
    """A random sign pattern in ``cell`` px cells, ``3 x size x size`` in {-1, 1} (a protection-like
    structured noise); ``smooth`` makes it a low-frequency texture (3 x 3 majority of the cells)."""
    h = size // cell
    pattern = torch.sign(torch.randn(3, h, h, generator=gen))
    if smooth:
        pattern = F.avg_pool2d(pattern[None], 3, 1, 1)[0].sign()
    return F.interpolate(pattern[None], size=(size, size), mode="nearest")[0]


def degrade(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Random degradations for the restoration prior and the quality words: Gaussian noise, structured
    (blocky, sign) noise like a protective perturbation at 4-16/255, blur or 8-bit-style quantization.
    Returns the images and one word per image: ``"noisy"`` or ``"blurry"``."""
    out, words = [], []
    for img in x:
        kind = int(torch.randint(0, 4, (1,), generator=gen))
        if kind == 0:
            sigma = float(torch.empty(1).uniform_(4, 20, generator=gen)) / 255
            img = img + sigma * torch.randn(img.shape, generator=gen)
            words.append("noisy")
        elif kind in (1, 2):
            eps = float(torch.empty(1).uniform_(4, 16, generator=gen)) / 255
            img = img + eps * sign_noise(int(torch.randint(1, 4, (1,), generator=gen)), gen, smooth=kind == 2)
            words.append("noisy")
        else:
            k = int(torch.randint(1, 3, (1,), generator=gen)) * 2 + 1
            img = F.avg_pool2d(F.pad(img[None], (k // 2,) * 4, mode="replicate"), k, 1)[0]
            words.append("blurry")
        out.append(img.clamp(0, 1))
    return torch.stack(out), words


def mild(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The everyday degradations of a probe photo, as a face encoder's training augmentation: per image,
    a third unchanged, a third Gaussian noise (sigma 2-12/255), a third a 3 x 3 box blur. Never the
    structured sign noise of :func:`degrade` (a face encoder is not trained on protections)."""
    out = []
    for img in x:
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        if kind == 1:
            img = img + float(torch.empty(1).uniform_(2, 12, generator=gen)) / 255 * torch.randn(img.shape, generator=gen)
        elif kind == 2:
            img = F.avg_pool2d(F.pad(img[None], (1, 1, 1, 1), mode="replicate"), 3, 1)[0]
        out.append(img.clamp(0, 1))
    return torch.stack(out)


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic (antialiased) resize of ``B x 3 x H x W`` in [0, 1] to ``size`` px, clamped; unchanged if already that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
