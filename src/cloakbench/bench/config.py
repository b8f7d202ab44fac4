"""Bench configuration: one YAML file describes the whole grid (pydantic models).

identities x protections (with budgets) x purifications (incl. "none") x training recipes (DreamBooth /
LoRA, CDL on/off) x sampling (QES on/off) x seeds, plus the metrics. :func:`load_config` reports every
problem at once (unknown keys, unknown method names, missing folders, impossible values), each with
its key, before any work starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import protocol
from ..errors import ConfigError, InputError
from ..images import IMAGE_SUFFIXES
from ..models.loading import DEFAULT_MODEL
from ..personalize.dreambooth import LATENT_MODES, OPTIMIZERS, PRECISIONS


class Strict(BaseModel):
    # the docstring under each field is its description: the meaning docs/CONFIG.md gives each key (config_doc.py)
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DataConfig(Strict):
    """Identity folders. ``layout="setabc"``: ``<id>/set_A`` (clean, surrogate), ``set_B`` (to protect and
    train on), ``set_C`` (clean references), as Anti-DreamBooth. ``layout="folder"``: ``<id>/<subdir>``
    split in order into ``train`` images to protect and the remaining ``reference`` images."""

    root: Path | None = None
    """Folder with one sub-folder per identity, relative to the YAML file; give either ``root`` or ``world``."""
    world: "WorldData | None" = None
    """Render the identities from the mini world instead of reading folders."""
    identities: list[str] | None = None
    """Identity folders inside ``root`` to use; default: every sub-folder, sorted (with ``world``: its subjects)."""
    layout: Literal["setabc", "folder"] = "folder"
    """``setabc``: ``<id>/set_A`` (the protector's clean photos), ``set_B`` (protected and fine-tuned on), ``set_C``
    (clean references); ``folder``: ``<id>/<subdir>`` split into ``train`` and ``reference`` images."""
    subdir: str = "clean"
    """Image folder inside each identity folder, layout ``folder`` (``"."``: the identity folder itself)."""
    train: int = Field(2, ge=1)
    """Images per identity to protect and fine-tune on: the first in file-name order (layout ``folder``, ``world``)."""
    reference: int = Field(2, ge=1)
    """Clean reference images per identity that the metrics compare samples with: the next ones after ``train``."""


class WorldData(Strict):
    """Identities from the mini world (:mod:`cloakbench.models.mini.world`) instead of folders: ``photos``
    photos of each subject index, rendered once (deterministic from ``seed``) under
    ``$CLOAKBENCH_HOME/world``; identities are named ``subject<index>``."""

    subjects: list[int] = Field(min_length=1)
    """Subject indices of the mini world, each in [0, 576); identity ``subject<index>``."""
    photos: int = Field(8, ge=2)
    """Photos rendered per subject; at least ``data.train + data.reference``."""
    seed: int = 0
    """Seed of the rendering: the same seed gives the same photos."""


DataConfig.model_rebuild()


EXTERNAL = "external"  # the protection method of images protected elsewhere (ProtectionSpec.path)


class ProtectionSpec(Strict):
    """One protection of the grid, run on every identity's training images; its cell label is ``method@eps``
    (``advdm@8/255``), ``none``, or an external entry's ``name``."""

    method: str
    """Protection name (``cloakbench list protections``) or plugin ``module:Class``; ``none``: the clean baseline;
    ``external``: images protected elsewhere, read from ``path``."""
    eps: str | float | None = None
    """L-inf budget in [0, 1] image units: ``"k/255"`` (``"8/255"``) or a number in (0, 1]; default: the method's."""
    models: list[str] | None = None
    """Surrogate models the perturbation is optimised against (an ensemble, E-ASPL); default: the bench ``model``."""
    steps: int | None = Field(None, ge=1)
    """PGD updates; default: the method's own."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The method's own settings (``cloakbench list protections``), or any of alpha, norm, random_start, prompt,
    class_prompt, transforms, eot_samples."""
    # method "external": protected images made elsewhere (Glaze, a tool's app, another paper's code), one folder per
    # identity, <path>/<identity>/<stem>.<ext> for each training image <stem> (stages.protection.external)
    path: Path | None = None
    """Method ``external``: folder holding ``<identity>/<stem>.<ext>`` for each training image ``<stem>``, at its
    size; relative to the YAML file. The budget is measured, not set."""
    name: str | None = None
    """Method ``external``: the cell label (default: the folder's name)."""


class RecipeSpec(Strict):
    """One fine-tuning recipe of the mimic (DreamBooth, full or LoRA, CDL on or off), trained on every protection x
    purification it takes and sampled with each of its QES settings."""

    name: str
    """The recipe's label in tables and run folders; unique in the grid (``tables: paper`` reads roles from it)."""
    lora: bool = False
    """Train LoRA adapters on the UNet instead of fine-tuning the whole UNet and text encoder."""
    lora_rank: int = Field(4, ge=1)
    """Rank of the LoRA adapters (with ``lora: true``)."""
    cdl: bool = False
    """Contrastive Decoupling Learning: instance prompts get ``, bhj noisy pattern``, class prompts ``, without bhj
    noisy pattern``, so the identifier does not absorb the perturbation."""
    steps: int = Field(1000, ge=1)
    """Training steps (optimizer updates)."""
    lr: float | None = Field(None, gt=0)
    """Learning rate; default 5e-7 for a full fine-tune, 1e-4 for LoRA (``protocol.default_lr``)."""
    prior: bool = True
    """Prior preservation: also train on class images the base model draws from the class prompt (loss weight 1)."""
    num_class_images: int = Field(200, ge=1)
    """Class images of the prior (with ``prior: true``)."""
    class_steps: int = Field(50, ge=1)
    """Denoising steps per class image of the prior."""
    purifications: list[str] | None = None
    """Train this recipe only on these entries of ``purifications``; default: all."""
    protections: list[str] | None = None
    """Train this recipe only on these protections, by label (``advdm@8/255``) or method; default: all."""
    qes: list[bool] | None = None
    """Sample this recipe with these QES settings (``[false, true]``: both); default: ``sampling.qes``."""
    # DreamBooth numerics (personalize.TrainConfig; the reference's by default, docs/PAPER.md §7)
    latents: Literal[LATENT_MODES] = "sample"
    """``sample``: a fresh VAE posterior draw every step (the reference's); ``cached``: one draw per image per run."""
    mixed_precision: Literal[PRECISIONS] = "auto"
    """``auto``: bf16 on a CUDA device that has it, else fp32; ``no``: fp32; ``bf16`` / ``fp16``: autocast over fp32
    weights."""
    optimizer: Literal[OPTIMIZERS] = "adamw"
    """``adamw``: torch AdamW; ``adamw8bit``: bitsandbytes' 8-bit AdamW (CUDA only; the reference's)."""

    # which cells a grid crosses the recipe with, not what it trains
    PLAN: ClassVar[tuple[str, ...]] = ("purifications", "protections", "qes")

    def training(self) -> dict[str, Any]:
        """The one canonical view of the recipe (JSON types, every key explicit): its name and everything that
        changes what is trained, without the plan filters (:attr:`PLAN`). The train stage's spec holds it and the
        run folder's recipe label is its hash (:func:`~cloakbench.bench.runfolder.identity`), so a grid may widen
        a recipe's filters and keep its finished fine-tunes."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in self.PLAN}

    def takes(self, prot: "ProtectionSpec") -> bool:
        """Whether this recipe trains on protection ``prot`` (:attr:`protections` lists labels or methods)."""
        from .runfolder import protection_label

        return self.protections is None or prot.method.lower() in self.protections or protection_label(prot) in self.protections


class SamplingSpec(Strict):
    """How every fine-tuned model is sampled for the metrics."""

    qes: list[bool] = [False]
    """QES settings each model is sampled with: ``true``: the paper's quality-enhanced sampling (negative prompt,
    100 PNDM steps), ``false``: plain (50 steps). A recipe's ``qes`` replaces it."""
    prompts: list[str] = list(protocol.SAMPLE_PROMPTS)
    """Sampling prompts, with the identifier ``sks``."""
    n: int = Field(16, ge=1)
    """Images generated per prompt."""
    steps: int | None = Field(None, ge=1)
    """Denoising steps; default 100 with QES, 50 without."""
    # when ", without <noise>" is appended to every prompt (stages.sampling.use_suffix): "always" is the reference's
    # (DiffShortcut train_dreambooth.py:514: every cell, CDL-trained or not), "cdl+qes" cloakbench's before #31
    suffix: Literal[protocol.SUFFIX_MODES] = protocol.SAMPLE_SUFFIX
    """When ``, without bhj noisy pattern`` is appended to the prompts: ``always`` (the reference's), ``cdl+qes``
    (only CDL-trained models sampled with QES), ``never``."""


class BenchConfig(Strict):
    """A whole grid: identities x protections x purifications x recipes x QES x seeds, and the metrics."""

    name: str = "bench"
    """The grid's name, recorded in ``RUN/grid.json`` and shown in the report."""
    model: str = DEFAULT_MODEL
    """The diffusion model of every stage: a hub id, a diffusers folder, a ``.safetensors`` file, ``mini`` (the mini
    stack) or ``tiny`` (random weights, for tests)."""
    subject: str = protocol.CLASS_WORD
    """Class noun of the prompts: ``a photo of sks {subject}`` to train on, ``a photo of {subject}`` for the prior."""
    instance_prompt: str | None = None
    """Training prompt of the identity, also the one protections attack; default ``a photo of sks {subject}``."""
    class_prompt: str | None = None
    """Prompt of the prior's class images; default ``a photo of {subject}``."""
    resolution: int = Field(512, gt=0)
    """Side in pixels of the square images every stage works at (photos are center-cropped and resized to it); a
    multiple of 8."""
    data: DataConfig
    """Where the identities' photos come from and how they are split."""
    protections: list[ProtectionSpec] = Field(min_length=1)
    """The protections to red-team; ``{method: none}`` is the clean baseline."""
    purifications: list[str] = ["none"]
    """Red teams applied to the protected images before fine-tuning (``cloakbench list purifiers``); ``none``: as they
    are; ``a+b``: ``a``, then ``b``."""
    purify_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings per entry of ``purifications`` (``gridpure: {tile: 256}``); in a chain ``a+b`` each part takes those
    it knows."""
    purify_clean: bool = False
    """Also run the red teams on the clean baseline (protection ``none``)."""
    recipes: list[RecipeSpec] = Field(min_length=1)
    """The mimic's fine-tuning recipes."""
    sampling: SamplingSpec = SamplingSpec()
    """How every fine-tuned model is sampled."""
    metrics: list[str] = ["ism", "fdfr", "ims", "brisque"]
    """Metrics of the samples against the identity's references (``cloakbench list metrics``), with an optional
    backend in brackets: ``ism[dlib]``, ``verified[mini]``."""
    seeds: list[Annotated[int, Field(ge=0, le=protocol.SEED_MAX)]] = [0]
    """Every protection, purification, training and sampling runs once per seed."""
    tables: Literal["paper"] | None = None
    """``paper``: map the plan onto the paper's Tables 1, 3 and 4 (``--dry-run`` prints it; recipe names are the
    roles of ``bench/paper.py``)."""
    executor: Literal["local", "ray"] = "local"
    """``local``: stages run on this machine; ``ray``: one Ray task per stage (``pip install 'cloakbench[ray]'``);
    ``--executor`` overrides it."""

    @field_validator("resolution")
    @classmethod
    def _mult8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"must be a multiple of 8, got {v}")
        return v


def prompts(cfg: "BenchConfig") -> tuple[str, str]:
    """The training (instance, class) prompts of a config."""
    return (cfg.instance_prompt or protocol.instance_prompt(cfg.subject), cfg.class_prompt or protocol.class_prompt(cfg.subject))


# the keyword arguments every protection takes besides its own options (protect.base.Protection.__init__)
PROTECTION_KEYS = {"alpha", "norm", "random_start", "prompt", "class_prompt", "transforms", "eot_samples"}


def _unknown(registry, name: str) -> str | None:
    """Why ``name`` names nothing in ``registry`` (close matches, or why a ``module:Class`` did not load)."""
    from ..errors import UnknownNameError

    try:
        registry.get(name)
    except UnknownNameError as exc:
        return str(exc)
    return None


def _semantic(cfg: BenchConfig, base: Path) -> list[str]:
    from ..images import parse_budget
    from ..registry import non_finite
    from ..metrics import METRICS
    from ..protect import PROTECTIONS
    from ..purify import PURIFIERS

    from .runfolder import protection_label

    problems = []
    for i, p in enumerate(cfg.protections):
        if p.method.lower() == EXTERNAL:
            if p.path is None:
                problems.append(f"protections[{i}].path: an external protection needs the folder of its images")
            elif not (p.path if p.path.is_absolute() else base / p.path).is_dir():
                problems.append(f"protections[{i}].path: folder {p.path} does not exist")
            if p.eps is not None or p.steps is not None or p.options or p.models:
                problems.append(f"protections[{i}]: an external protection takes only path and name (its budget is "
                                "measured on its files, not set)")
        elif p.path is not None or p.name is not None:
            problems.append(f"protections[{i}]: path / name are for method external, not {p.method!r}")
        elif p.method.lower() != "none" and (why := _unknown(PROTECTIONS, p.method)):
            problems.append(f"protections[{i}].method: {why}")
        elif p.method.lower() != "none":  # options checked now, not when the protect stage builds the method
            cls = PROTECTIONS.get(p.method).factory
            unknown = sorted(set(p.options) - set(cls.options) - PROTECTION_KEYS)
            if unknown:
                problems.append(f"protections[{i}].options: unknown option(s) {', '.join(unknown)} of {p.method}; valid: "
                                f"{', '.join(sorted(set(cls.options) | PROTECTION_KEYS))}")
            for bad in non_finite(p.options):
                problems.append(f"protections[{i}].options: {bad} must be a finite number")
        if p.eps is not None:
            try:
                parse_budget(p.eps)
            except ValueError as exc:
                problems.append(f"protections[{i}].eps: {exc}")
    for i, name in enumerate(cfg.purifications):
        for part in name.split("+"):
            if part != "none" and (why := _unknown(PURIFIERS, part)):
                problems.append(f"purifications[{i}]: {why}")
    for name, opts in cfg.purify_options.items():
        parts = [PURIFIERS.get(x).factory for x in name.split("+") if x in PURIFIERS]
        valid = set().union(*(getattr(c, "options", {}) for c in parts)) | {"seed", "device", "dtype"} if parts else None
        if valid is not None and (unknown := sorted(set(opts) - valid)):
            problems.append(f"purify_options.{name}: unknown option(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(sorted(valid))}")
        for bad in non_finite(opts):
            problems.append(f"purify_options.{name}: {bad} must be a finite number")
    for i, m in enumerate(cfg.metrics):
        if why := _unknown(METRICS, m.split("[")[0]):
            problems.append(f"metrics[{i}]: {why}")
    labels = [protection_label(p) for p in cfg.protections]
    for i, r in enumerate(cfg.recipes):
        for j, name in enumerate(r.protections or []):
            if not any(name in (p.method.lower(), label) for p, label in zip(cfg.protections, labels)):
                problems.append(f"recipes[{i}].protections[{j}]: {name!r} is neither a protection method nor a label "
                                f"of protections ({', '.join(labels)})")
        for pur in r.purifications or []:
            if pur not in cfg.purifications:
                problems.append(f"recipes[{i}].purifications: {pur!r} is not among purifications {cfg.purifications}")
    names = [r.name for r in cfg.recipes]
    if len(set(names)) != len(names):
        problems.append("recipes: recipe names must be unique")
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"protections: two entries share the label {label!r} (method@eps): results would be averaged "
                        "together; give them different budgets or run them in separate grids")
    for i, m in enumerate(cfg.metrics):
        if m.split("[")[0] in METRICS and METRICS.get(m.split("[")[0]).factory.paired:
            problems.append(f"metrics[{i}]: {m} compares each image with the reference of the same name; generated "
                            "samples have no such pair (PSNR / SSIM / LPIPS of purified images are in the report)")
    if cfg.data.world is not None:
        from ..models.mini.world import N_SUBJECTS

        if cfg.data.root is not None:
            problems.append("data: give either data.root or data.world, not both")
        for i, s in enumerate(cfg.data.world.subjects):
            if not 0 <= s < N_SUBJECTS:
                problems.append(f"data.world.subjects[{i}]: subject index must be in [0, {N_SUBJECTS}), got {s}")
        if cfg.data.world.photos < cfg.data.train + cfg.data.reference:
            problems.append(f"data.world.photos: {cfg.data.world.photos} photos, the split needs "
                            f"train + reference = {cfg.data.train + cfg.data.reference}")
        return problems
    if cfg.data.root is None:
        problems.append("data: give data.root (identity folders) or data.world (mini world subjects)")
        return problems
    root = cfg.data.root if cfg.data.root.is_absolute() else base / cfg.data.root
    if not root.is_dir():
        problems.append(f"data.root: folder {root} does not exist")
    else:
        for i, ident in enumerate(cfg.data.identities or []):
            if ident in ("", ".", "..") or Path(ident).name != ident:
                problems.append(f"data.identities[{i}]: {ident!r} is not a folder name inside data.root")
                continue
            sub = ["set_A", "set_B", "set_C"] if cfg.data.layout == "setabc" else [cfg.data.subdir]
            for s in sub:
                if not (root / ident / s).is_dir():
                    problems.append(f"data.identities: folder {root / ident / s} does not exist")
    return problems


def identity_files(cfg: "BenchConfig", ident: str) -> tuple[list[Path], list[Path], list[Path]]:
    """(images to protect and train on, clean reference images, the protector's clean images) of one identity.

    ``setabc`` (Anti-DreamBooth's layout, the paper's): set_B, set_C, set_A; ``folder``: the split of one folder
    and no separate protector's set (surrogates train on the images they protect)."""
    root = cfg.data.root / ident

    def imgs(folder: Path) -> list[Path]:
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        _refuse_non_utf8([p.name for p in found], folder, "photo(s)")
        return found

    if cfg.data.layout == "setabc":
        return imgs(root / "set_B"), imgs(root / "set_C"), imgs(root / "set_A")
    files = imgs(root / cfg.data.subdir)
    need = cfg.data.train + cfg.data.reference
    if len(files) < need:
        raise ValueError(f"{root / cfg.data.subdir}: {len(files)} images, the split needs {need}")
    return files[: cfg.data.train], files[cfg.data.train : need], []


def identities(cfg: "BenchConfig") -> list[str]:
    """The grid's identities: ``data.identities``, or every folder of ``data.root``; a name that is not valid UTF-8
    is refused by name here, before any stage (rows, records and the report hold it as text)."""
    names = cfg.data.identities or sorted(p.name for p in cfg.data.root.iterdir() if p.is_dir())
    _refuse_non_utf8(names, cfg.data.root, "identity folder(s)")
    return names


def _refuse_non_utf8(names: list[str], where: Path, what: str) -> None:
    """An :class:`InputError` naming every one of ``names`` that is not valid UTF-8 text."""
    from ..images import utf8

    bad = [n for n in names if not utf8(n)]
    if bad:
        raise InputError(f"{where}: {what} {', '.join(ascii(n) for n in bad)} are not named in valid UTF-8 (another "
                         "system's encoding): rename them")


def missing_packages(cfg: BenchConfig) -> list[str]:
    """Problems that only matter when stages run (checked before the first stage, not by a dry run)."""
    return [f"recipes[{i}].optimizer: adamw8bit needs the bitsandbytes package, which is not installed "
            "(pip install bitsandbytes; CUDA only); or use adamw"
            for i, r in enumerate(cfg.recipes)
            if r.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None]


class _NoAliases(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases: a grid needs none, and nested aliases (a 759-byte
    "billion laughs") expand to gigabytes when the grid is dumped and hashed (#37)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed in "
                                 "a grid; write the value out")
        return super().compose_node(parent, index)


def load_config(path: str | Path) -> BenchConfig:
    """Read and validate a bench YAML; raise :class:`ConfigError` listing every problem with its key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_NoAliases)  # noqa: S506 - a SafeLoader without aliases
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), [f"cannot read YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["the file must hold a mapping of keys"])
    try:
        cfg = BenchConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()]
        # name and folder checks on the raw mapping too, so one run reports everything
        raise ConfigError(str(path), problems + _semantic_partial(raw, path.parent)) from None
    problems = _semantic(cfg, path.parent)
    if problems:
        raise ConfigError(str(path), problems)
    if cfg.data.world is not None:
        from ..models.mini.photos import materialize

        cfg.data.root, cfg.data.identities = materialize(cfg.data.world.subjects, cfg.data.world.photos,
                                                         cfg.data.world.seed)
        cfg.data.layout, cfg.data.subdir = "folder", "clean"
    else:
        cfg.data.root = cfg.data.root if cfg.data.root.is_absolute() else (path.parent / cfg.data.root).resolve()
    for p in cfg.protections:
        if p.path is not None and not p.path.is_absolute():
            p.path = (path.parent / p.path).resolve()
    problems = _external_pairs(cfg)
    if problems:
        raise ConfigError(str(path), problems)
    return cfg


def _external_pairs(cfg: BenchConfig) -> list[str]:
    """Every training image of every identity has its protected file in each external entry's folder, of the
    same size (read from the headers: nothing is decoded)."""
    from PIL import Image

    from ..stages.protection import external_pairs

    problems = []
    for i, p in enumerate(cfg.protections):
        if p.method.lower() != EXTERNAL or p.path is None:
            continue
        for ident in identities(cfg):
            try:
                pairs = external_pairs(identity_files(cfg, ident)[0], p.path / ident)
            except (InputError, ValueError) as exc:
                problems.append(f"protections[{i}].path: {exc}")
                continue
            for clean, prot in pairs:
                with Image.open(clean) as a, Image.open(prot) as b:
                    if a.size != b.size:
                        problems.append(f"protections[{i}].path: {prot} is {b.size[0]}x{b.size[1]}, its clean image "
                                        f"{clean} is {a.size[0]}x{a.size[1]}: a protection keeps the size")
    return problems


def _semantic_partial(raw: dict, base: Path) -> list[str]:
    """Name checks on a config that failed schema validation (methods, purifiers, metrics)."""
    from ..metrics import METRICS
    from ..protect import PROTECTIONS
    from ..purify import PURIFIERS

    def items(key: str) -> list:  # a scalar where a list belongs is a schema error already: no per-character checks
        value = raw.get(key)
        return value if isinstance(value, list) else []

    out = []
    for i, p in enumerate(items("protections")):
        if (isinstance(p, dict) and isinstance(p.get("method"), str) and p["method"].lower() not in ("none", EXTERNAL)
                and p["method"] not in PROTECTIONS):
            out.append(f"protections[{i}].method: unknown protection {p['method']!r}")
    for i, n in enumerate(items("purifications")):
        if isinstance(n, str) and any(x != "none" and x not in PURIFIERS for x in n.split("+")):
            out.append(f"purifications[{i}]: unknown purifier {n!r}")
    for i, m in enumerate(items("metrics")):
        if isinstance(m, str) and m.split("[")[0] not in METRICS:
            out.append(f"metrics[{i}]: unknown metric {m!r}")
    data = raw.get("data") or {}
    if isinstance(data, dict) and data.get("root"):
        root = Path(data["root"]) if Path(data["root"]).is_absolute() else base / data["root"]
        if not root.is_dir():
            out.append(f"data.root: folder {root} does not exist")
    return out
