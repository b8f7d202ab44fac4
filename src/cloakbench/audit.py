"""``cloakbench audit CLEAN PROTECTED``: does a protection made anywhere hold, and against which red team?

The one call that scores images protected outside cloakbench (Glaze, the Mist app, another paper's code):

    CLEAN/<identity>/*.png       the identity's clean photos, sorted by name: the first ``train`` are the ones
                                 that were protected (and that the mimic fine-tunes on), the rest are references
    PROTECTED/<identity>/<stem>  the protected version of each of those first ``train`` photos, paired by stem
                                 (any image suffix), the same size

:func:`grid` writes a bench grid (``RUN/audit.yaml``) with the clean baseline and the protected folder as a
protection entry of its own (``method: external``: its budget is measured on the files, never taken on
trust), crossed with the red teams asked for; the bench runner runs it (resumable: rerun the same command),
and the verdict (:mod:`cloakbench.bench.verdict`) answers: "holds against N of M red teams; strongest: X
recovers Y % [lo, hi]".

A red team is written as in the verdict, lower case, joined by ``+``: a purifier (a name of the purifier
registry, or a chain ``a+b``), ``cdl`` (Contrastive Decoupling Learning in the
fine-tune), ``qes`` (quality-enhanced sampling), e.g. ``codesr+cdl+qes``, the paper's full red team. QES only
changes sampling, so every red team of one fine-tune is sampled with and without it when any asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .images import IMAGE_SUFFIXES

MINI_TEAMS = ("jpeg", "gridpure", "codesr-mini", "cdl+qes", "codesr-mini+cdl+qes")
TEAMS = ("jpeg", "codesr", "cdl+qes", "codesr+cdl+qes")  # the paper's (Table 4) and its JPEG baseline
MINI_GRIDPURE = {"model": "mini", "tile": 16, "stride": 8, "iterations": 5}  # configs/mini-baselines.yaml
MINI_BASE = Path(__file__).parent / "minilab" / "mini-paper.yaml"  # the mini recipe, sampling and metrics
GRID = "audit.yaml"


def parse_team(text: str) -> tuple[str, bool, bool]:
    """``"codesr+cdl+qes"`` -> ``("codesr", True, True)``: (purification, CDL, QES); ``"cdl"`` -> ``("none", True,
    False)``."""
    parts = [p.strip().lower() for p in text.split("+") if p.strip()]
    if not parts:
        raise InputError(f"red team {text!r}: empty")
    purifier = "+".join(p for p in parts if p not in ("cdl", "qes")) or "none"
    return purifier, "cdl" in parts, "qes" in parts


def _identities(clean: Path, protected: Path) -> list[str]:
    if not clean.is_dir():
        raise InputError(f"{clean}: the clean folder does not exist")
    if not protected.is_dir():
        raise InputError(f"{protected}: the protected folder does not exist")
    loose = [p.name for p in sorted(clean.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise InputError(f"{clean}: holds images ({', '.join(loose[:3])}...); audit reads one folder per identity, "
                         f"{clean}/<identity>/*.png, and the protected ones in {protected}/<identity>/")
    ids = sorted(p.name for p in clean.iterdir() if p.is_dir())
    if not ids:
        raise InputError(f"{clean}: no identity folder ({clean}/<identity>/*.png)")
    missing = [i for i in ids if not (protected / i).is_dir()]
    if missing:
        raise InputError(f"{protected}: no folder for identit{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
    return ids


def grid(clean: Path, protected: Path, *, model: str = "mini", red_teams: list[str] | None = None,
         name: str | None = None, seeds: list[int] | None = None, samples: int | None = None,
         steps: int | None = None, lr: float | None = None, class_images: int | None = None,
         metrics: list[str] | None = None, resolution: int | None = None) -> dict[str, Any]:
    """The bench grid (a mapping, as YAML holds it) that audits ``protected`` against ``clean``.

    ``model`` ``mini``: the mini stack's recipe, sampling and metrics (``minilab/mini-paper.yaml``); any other
    model: the paper's DreamBooth (1000 steps, its learning rate, 200 class images), 16 samples of the first
    two prompts, ISM / FDFR / BRISQUE. ``train`` (images per identity trained on) is the number of protected
    files of the first identity."""
    clean, protected = Path(clean).resolve(), Path(protected).resolve()
    ids = _identities(clean, protected)
    counts = {}
    for i in ids:
        counts[i] = (len([p for p in (clean / i).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]),
                     len([p for p in (protected / i).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]))
    train = counts[ids[0]][1]
    short = [f"{i} ({c} clean, {p} protected)" for i, (c, p) in counts.items() if p != train or c <= train]
    if train == 0 or short:
        raise InputError(f"every identity needs the same number of protected photos ({train} in {protected / ids[0]}) "
                         f"and at least one clean photo more, as a reference: {', '.join(short) or ids[0]}")
    mini = model == "mini"
    teams = list(red_teams or (MINI_TEAMS if mini else TEAMS))
    parsed = [parse_team(t) for t in teams]
    label = name or protected.name
    base: dict[str, Any] = yaml.safe_load(MINI_BASE.read_text()) if mini else {
        "model": model, "subject": "person", "resolution": 512, "metrics": ["ism", "fdfr", "brisque"],
        "sampling": {"n": 16}}
    numerics = {k: v for k, v in base.get("recipes", [{}])[0].items()
                if k not in ("name", "cdl", "purifications", "protections", "qes")}
    numerics |= {k: v for k, v in (("steps", steps), ("lr", lr), ("num_class_images", class_images)) if v is not None}
    plain = [(p, q) for p, c, q in parsed if not c]
    cdl = [(p, q) for p, c, q in parsed if c]
    recipes = [{"name": "dreambooth", **numerics, "purifications": sorted({"none"} | {p for p, _ in plain}),
                "qes": sorted({False} | {q for _, q in plain})}]
    if cdl:
        recipes.append({"name": "dreambooth-cdl", "cdl": True, **numerics, "protections": [label],
                        "purifications": sorted({p for p, _ in cdl}), "qes": sorted({q for _, q in cdl})})
    purifications = ["none"] + sorted({p for p, _, _ in parsed} - {"none"})
    sampling = dict(base.get("sampling", {}))
    if samples is not None:
        sampling["n"] = samples
    return {"name": "audit", "model": model, "subject": base.get("subject", "person"),
            "resolution": resolution or base.get("resolution", 512),
            "data": {"root": str(clean), "identities": ids, "layout": "folder", "subdir": ".", "train": train,
                     "reference": min(c for c, _ in counts.values()) - train},
            "protections": [{"method": "none"}, {"method": "external", "path": str(protected), "name": label}],
            "purifications": purifications, "recipes": recipes, "sampling": sampling,
            "purify_options": {"gridpure": MINI_GRIDPURE} if mini and "gridpure" in purifications else {},
            "metrics": metrics or base.get("metrics"), "seeds": seeds or [0], "executor": "local"}


def write_grid(run: Path, cfg: dict[str, Any]) -> Path:
    """``run/audit.yaml``; an existing one that holds another audit is refused (never replaced)."""
    from .bench.runfolder import refuse_foreign

    path = Path(run) / GRID
    refuse_foreign(Path(run))
    text = "# written by `cloakbench audit`; `cloakbench bench audit.yaml --out .` reruns it\n" + yaml.safe_dump(
        cfg, sort_keys=False)
    if path.is_file():
        if yaml.safe_load(path.read_text()) != cfg:
            raise InputError(f"{path}: this run folder holds another audit (other images, red teams or settings); "
                             "give another --out")
        return path
    from .images import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path
