"""``Protection`` base class and registry.

A protection is a configured object: ``create_protection("aspl", eps=8/255)(images, model, seed=0)``
returns protected images (``B x 3 x H x W`` in [0, 1]) already on the 8-bit grid and within budget
against the 8-bit clean images. ``model`` is a :class:`~cloakbench.models.DiffusionModel` or a list
of them (an ensemble: objectives are averaged). Subclasses define the defaults (from the reference
code, converted to k/255; docs/PROTECTIONS.md §1), ``objective`` (maximised) and, when the algorithm is
more than plain PGD, ``perturb``. ``steps`` is always the number of perturbation updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from .. import protocol
from ..images import check_images, quantize
from ..models.bundle import DiffusionModel
from ..registry import Registry, non_finite
from .engine import PGD, finalize, run_pgd
from .transforms import make_transforms

DEFAULT_PROMPT = protocol.INSTANCE_PROMPT
CLASS_PROMPT = protocol.CLASS_PROMPT

PROTECTIONS: Registry["Protection"] = Registry("protection", group="cloakbench.protections")


def register_protection(cls: type["Protection"]) -> type["Protection"]:
    """Class decorator registering ``cls`` under ``cls.name`` with its paper and defaults."""
    PROTECTIONS.register(cls.name, paper=cls.paper, eps=cls.eps, norm=cls.norm, steps=cls.steps)(cls)
    return cls


def create_protection(name: str, **overrides: Any) -> "Protection":
    """Build a registered protection with keyword overrides of its defaults."""
    return PROTECTIONS.create(name, **overrides)


def list_protections() -> list[str]:
    return PROTECTIONS.names()


def _describe(value: Any) -> Any:
    """A config value for JSON: tensors (clean sets, targets) by shape, never by their numbers."""
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)}"
    return value


class Protection:
    """Base class: budget, step, steps, prompt, EOT, and per-method ``options``."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    reference: ClassVar[str] = ""  # the reference code its defaults come from, "owner/repo path/file.py" ("": our own)
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the optional packages it needs (pyproject extras)
    eps: float = 8 / 255
    alpha: float = 1 / 255
    steps: int = 100
    norm: str = "linf"
    step: str = "sign"
    random_start: bool = False
    decay: bool = False
    decay_to: float = 0.0  # with ``decay``: the last step's share of ``alpha``
    options: ClassVar[dict[str, Any]] = {}  # method-specific defaults, overridable by keyword
    min_models: ClassVar[int] = 1  # surrogates needed (ensembles: 2)

    def __init__(
        self,
        *,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
        norm: str | None = None,
        random_start: bool | None = None,
        prompt: str = DEFAULT_PROMPT,
        class_prompt: str = CLASS_PROMPT,
        transforms: str | Sequence | None = None,
        eot_samples: int = 1,
        progress: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"{self.name}: unknown option(s) {', '.join(unknown)}; "
                            f"valid: eps, alpha, steps, norm, random_start, prompt, class_prompt, transforms, "
                            f"eot_samples{', ' if self.options else ''}{', '.join(sorted(self.options))}")
        bad = non_finite({"eps": eps, "alpha": alpha, **options})
        if bad:
            raise ValueError(f"{self.name}: option(s) {', '.join(bad)} must be finite numbers")
        self.eps = type(self).eps if eps is None else float(eps)
        self.alpha = type(self).alpha if alpha is None else float(alpha)
        if not self.alpha > 0:
            raise ValueError(f"{self.name}: alpha (the step size, [0, 1] units) must be > 0, got {self.alpha}")
        self.steps = type(self).steps if steps is None else int(steps)
        self.norm = type(self).norm if norm is None else norm
        self.random_start = type(self).random_start if random_start is None else bool(random_start)
        if self.norm == "linf" and not 0 < self.eps <= 1:
            raise ValueError(f"{self.name}: eps must be in (0, 1] ([0, 1] units, e.g. 8/255), got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {self.steps}")
        self.prompt, self.class_prompt = prompt, class_prompt
        self.transform_spec = transforms
        self.transforms = make_transforms(transforms)
        self.eot_samples = int(eot_samples)
        self.progress = progress
        for key, default in self.options.items():
            setattr(self, key, options.get(key, default))
        self.stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ public
    def __call__(
        self,
        images: torch.Tensor,
        model: DiffusionModel | Sequence[DiffusionModel],
        *,
        seed: int = 0,
        class_images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Protect ``images`` (``B x 3 x H x W`` in [0, 1]); returns 8-bit-grid images within budget."""
        x0 = quantize(check_images(images).float())
        models = [model] if isinstance(model, DiffusionModel) else list(model)
        if not models:
            raise ValueError(f"{self.name}: no surrogate model given")
        x0 = x0.to(models[0].device)
        for m in models:
            side = m.vae_scale_factor * 4
            if x0.shape[-1] % side or x0.shape[-2] % side:
                raise ValueError(f"{self.name}: image size {tuple(x0.shape[-2:])} must be divisible by {side} for this model")
        gen = torch.Generator().manual_seed(seed)
        self._done = 0
        t0 = time.perf_counter()
        adv = self.perturb(x0, models, gen, class_images=None if class_images is None else class_images.to(x0))
        out = finalize(adv, x0, self.eps, self.norm)
        self.stats = {"seconds": time.perf_counter() - t0, "updates": self._done, "images": int(x0.shape[0])}
        return out.cpu()

    def config(self) -> dict[str, Any]:
        """The resolved configuration (budgets in [0, 1] units)."""
        return {"method": self.name, "paper": self.paper, "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
                "norm": self.norm, "random_start": self.random_start, "prompt": self.prompt,
                "class_prompt": self.class_prompt, "transforms": self.transform_spec, "eot_samples": self.eot_samples,
                **{k: _describe(getattr(self, k)) for k in self.options}}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, x0: torch.Tensor, model: DiffusionModel | Sequence[DiffusionModel],
                 *, seed: int = 1234, draws: int = 8) -> float:
        """The method's objective at ``x`` averaged over ``draws`` seeded draws (common random numbers)."""
        models = [model] if isinstance(model, DiffusionModel) else list(model)
        total = 0.0
        for d in range(draws):
            gen = torch.Generator().manual_seed(seed + d)
            with torch.enable_grad():  # some objectives build graphs internally
                total += float(self.objective(x.to(models[0].device), x0.to(models[0].device), models, gen))
        return total / draws

    # ------------------------------------------------------------------ for subclasses
    def objective(self, x: torch.Tensor, x0: torch.Tensor, models: list[DiffusionModel],
                  gen: torch.Generator) -> torch.Tensor:
        """The scalar the protection maximises at ``x`` (averaged over the ensemble)."""
        raise NotImplementedError

    def pgd(self, steps: int | None = None) -> PGD:
        return PGD(self.eps, self.alpha, self.steps if steps is None else steps, self.norm, self.step,
                   self.random_start, self.decay, float(self.decay_to))

    def perturb(self, x0: torch.Tensor, models: list[DiffusionModel], gen: torch.Generator, *,
                class_images: torch.Tensor | None = None) -> torch.Tensor:
        """Default: plain PGD on :meth:`objective` for ``steps`` updates."""
        return run_pgd(self.pgd(), x0, lambda x: self.objective(x, x0, models, gen), generator=gen,
                       transforms=self.transforms, samples=self.eot_samples, callback=self._tick)

    def _tick(self, i: int = 0, value: float = 0.0) -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self.steps)

    def mean_over(self, models: list[DiffusionModel], fn: Callable[[DiffusionModel], torch.Tensor]) -> torch.Tensor:
        """Average of ``fn(model)`` over the ensemble."""
        return sum(fn(m) for m in models) / len(models)


PROTECTIONS.base = Protection  # plugins (module:Class names, entry points) must subclass it
