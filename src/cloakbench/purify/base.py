"""``Purifier`` base class, registry and composition.

A purifier maps images (``B x 3 x H x W`` in [0, 1]) to images in [0, 1] (the size may change: the
CodeFormer stage upsamples x2, the SR stage returns 512 px). ``differentiable`` says whether gradients
flow through it; :meth:`Purifier.bpda` gives every purifier a straight-through (identity backward)
estimate for adaptive attacks (Athalye et al. 2018). Seconds per image are recorded in ``stats``.
``create_purifier("codeformer+realesrgan")`` composes purifiers left to right.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from ..images import check_images
from ..registry import Registry, non_finite

PURIFIERS: Registry["Purifier"] = Registry("purifier", group="cloakbench.purifiers")


def register_purifier(cls: type["Purifier"]) -> type["Purifier"]:
    PURIFIERS.register(cls.name, paper=cls.paper, differentiable=cls.differentiable)(cls)
    return cls


class Purifier:
    """Base class: subclasses set ``name``, ``paper``, ``differentiable`` and implement :meth:`purify`."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    reference: ClassVar[str] = ""  # the reference code its defaults come from, "owner/repo path/file.py" ("": our own)
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the optional packages it needs (pyproject extras)
    differentiable: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    half: ClassVar[str] = "bf16"  # default inference dtype of its diffusion model on CUDA (fp32 on CPU)

    def __init__(self, seed: int = 0, device: str | None = None, dtype: str | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"{self.name}: unknown option(s) {', '.join(unknown)}; valid: seed, device, dtype, "
                            f"{', '.join(sorted(self.options)) or '(none)'}")
        bad = non_finite(options)
        if bad:
            raise ValueError(f"{self.name}: option(s) {', '.join(bad)} must be finite numbers")
        for k, v in self.options.items():
            setattr(self, k, options.get(k, v))
        self.seed, self.device, self.dtype = seed, device, dtype
        self.stats: dict[str, Any] = {}

    def model_dtype(self) -> torch.dtype:
        """The dtype its diffusion model runs in: ``dtype`` if given, else :attr:`half` on CUDA, fp32 on CPU."""
        from ..models.device import default_dtype, parse_dtype

        return parse_dtype(self.dtype) if self.dtype else default_dtype(self.device, self.half)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        t0 = time.perf_counter()
        out = self.purify(images.float())
        sec = time.perf_counter() - t0
        self.stats = {"seconds": sec, "seconds_per_image": sec / max(1, images.shape[0]), "images": images.shape[0]}
        return out.clamp(0, 1)

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def purify_same_size(self, images: torch.Tensor) -> torch.Tensor:
        """Purified images at the input's size: outputs of another size (CodeSR upscales) are resized back
        with antialiased bicubic interpolation (PIL's bicubic downsizing, as the reference code resizes)."""
        out = self(images)
        if out.shape[-2:] != images.shape[-2:]:
            out = torch.nn.functional.interpolate(out, size=images.shape[-2:], mode="bicubic", antialias=True,
                                                  align_corners=False).clamp(0, 1)
        return out

    def bpda(self, images: torch.Tensor) -> torch.Tensor:
        """Purified images (at the input size) whose backward pass is the identity (BPDA)."""
        with torch.no_grad():
            out = self.purify_same_size(images.detach())
        return images + (out - images).detach()

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "paper": self.paper, "seed": self.seed, **({"dtype": self.dtype} if self.dtype else {}),
                **{k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), list)) else v)
                   for k in self.options for v in [getattr(self, k)]}}

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


class Compose(Purifier):
    """Purifiers applied left to right (``"codeformer+sd-upscaler"`` is CodeSR)."""

    name = "compose"

    def __init__(self, parts: list[Purifier]) -> None:
        super().__init__()
        self.parts = parts
        self.name = "+".join(p.name for p in parts)  # type: ignore[misc]

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return all(p.differentiable for p in self.parts)

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        self.part_seconds = {}
        for p in self.parts:
            images = p(images)
            self.part_seconds[p.name] = p.stats["seconds"]
        return images

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "parts": [p.config() for p in self.parts]}


def create_purifier(name: str, **overrides: Any) -> Purifier:
    """A registered purifier, or a ``+``-composition; overrides go to every part that accepts them."""
    if "+" in name:
        parts = []
        for part in name.split("+"):
            cls = PURIFIERS.get(part.strip()).factory
            kw = {k: v for k, v in overrides.items() if k in ("seed", "device", "dtype") or k in getattr(cls, "options", {})}
            parts.append(cls(**kw))
        return Compose(parts)
    return PURIFIERS.create(name, **overrides)


def list_purifiers() -> list[str]:
    return PURIFIERS.names()


PURIFIERS.base = Purifier  # plugins (module:Class names, entry points) must subclass it
