"""What a run folder holds and who may write it: the grid's identity (``grid.json``) and a lock (``.lock``).

A run folder belongs to one grid: at first use it records the config's name and hash and, for every
cell label (protection, purification, recipe), the hash of what the label stands for. A different
grid in the same folder is refused (naming both) unless the user adds to it on purpose; even then a
label that would mean something else (two recipes named ``db``, 8 and 4 steps; the same recipe under
another model) is refused, so results of different work are never averaged as repeats. One process at
a time holds ``.lock`` (an ``flock``, released by the kernel when its process ends).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..fsmode import locked  # noqa: F401  (the run folder's lock: RUN/.lock)
from .spec import SCHEMA, digest

GRID = "grid.json"
LOCK = ".lock"


def identity(cfg) -> dict[str, Any]:
    """``{"name", "hash", "schema", "labels": {kind: {label: hash}}}`` of a :class:`~cloakbench.bench.BenchConfig`
    (the hash leaves out where the data lives and the executor: moving a run folder keeps it). A label's
    hash covers its entry and every grid-wide setting that changes what a cell measures (model, resolution,
    prompts, sampling, data split): the same label under another model is other work. A recipe's label is the
    hash of its one canonical view (:meth:`~cloakbench.bench.config.RecipeSpec.training`, which leaves out its
    plan filters): a grid may add cells to a recipe by widening them. Hashes are :func:`~cloakbench.bench.spec.digest`
    under :data:`~cloakbench.bench.spec.SCHEMA`."""
    dump = cfg.model_dump(mode="json")
    dump.pop("executor", None)
    dump.pop("tables", None)  # how the plan is shown, not what a cell measures
    dump["data"].pop("root", None)
    shared = {k: v for k, v in dump.items() if k not in ("name", "protections", "purifications", "purify_options",
                                                         "recipes", "seeds", "metrics")}
    shared["data"] = {k: v for k, v in dump["data"].items() if k not in ("identities", "world")}
    if dump["data"].get("world"):
        shared["data"]["world"] = {k: v for k, v in dump["data"]["world"].items() if k != "subjects"}
    def short(obj: Any) -> str:  # 16 hex digits: what grid.json and the messages show
        return digest(obj)[:16]

    labels = {"protection": {protection_label(p): short([shared, p.model_dump(mode="json")]) for p in cfg.protections},
              "purification": {p: short([shared, p, cfg.purify_options.get(p, {})]) for p in cfg.purifications},
              "recipe": {r.name: short([shared, r.training()]) for r in cfg.recipes}}
    return {"name": cfg.name, "hash": short(dump), "schema": SCHEMA, "labels": labels}


def protection_label(prot) -> str:
    """The cell label of a protection spec: ``none``, ``method@eps`` (``advdm@8/255``), or an external entry's
    ``name`` (default: its folder's name)."""
    if prot.method.lower() == "none":
        return "none"
    if prot.method.lower() == "external":
        return prot.name or Path(str(prot.path)).name
    return prot.method + (f"@{prot.eps}" if prot.eps is not None else "")


_OLD = ("run folder {run} {why}: its stage folders are named by other hashes, so its finished work cannot be found "
        "again. Its results stay readable (results.sqlite, results.csv, report.html, `cloakbench report`). To go on, "
        "start a new --out (the stages run again), or finish this folder with the cloakbench that wrote it "
        "(git checkout 03d5561 or earlier; docs/ARCHITECTURE.md, 'Hashes').")
OWN_BEFORE_GRID = {LOCK, "audit.yaml"}  # what a run folder may hold before grid.json (the lock, audit's grid)


def foreign(run: Path) -> list[str]:
    """Names in ``run`` that say it is not a run folder (a folder of the user's files): empty for a new or empty
    folder, a run folder (``grid.json``), or one from before grid.json existed (``artifacts/`` and
    ``results.sqlite``)."""
    if not run.is_dir() or (run / GRID).is_file():
        return []
    names = sorted(p.name for p in run.iterdir() if p.name not in OWN_BEFORE_GRID)
    if (run / "artifacts").is_dir() and (run / "results.sqlite").is_file():
        return []
    return names


def refuse_foreign(run: Path) -> None:
    """A :class:`RunFolderError` when ``run`` holds files no cloakbench run wrote: they would be replaced."""
    names = foreign(run)
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise RunFolderError(f"{run} is not a run folder and holds {shown}: give a new or empty folder (a run "
                             "writes results.csv, report.html, ... there and would replace files of those names)")


def _changed_inputs(held: dict, inputs: dict[str, dict[str, str]]) -> list[str]:
    """Identities whose photos differ from the ones the run folder recorded, with what changed."""
    old = held.get("inputs", {})
    return [f"{ident} ({' and '.join(k for k in ('train', 'reference') if d.get(k) != old[ident].get(k))} photos)"
            for ident, d in sorted(inputs.items()) if ident in old and d != old[ident]]


def claim(run: Path, cfg, *, add: bool = False, dry: bool = False, inputs: dict[str, dict[str, str]] | None = None,
          threads: int | None = None) -> int | None:
    """Record ``cfg`` as the run folder's grid, or check that it is the same grid (``add``: a different
    grid may join when no label changes meaning). ``inputs``: per identity the content hashes of its training
    and reference photos (:meth:`~cloakbench.bench.Runner.input_digests`), recorded at first use; photos that
    changed since are refused, naming the identity (the rows of old and new photos would be averaged as
    repeats of one cell). Where the data lives is not recorded: a moved ``data.root`` with the same photos is
    the same run. ``dry``: check only, write nothing (``--dry-run`` refuses what the run would refuse).
    ``threads``: the CPU threads per stage the executor proposes; the folder records it at first use and returns
    the recorded count ever after, which every executor then uses, so local, worker and Ray stages of one folder
    give the same bytes (float rounding depends on the thread count). Raises :class:`RunFolderError`."""
    mine = identity(cfg)
    inputs = inputs or {}
    path = run / GRID
    refuse_foreign(run)
    if not path.is_file() and (run / "artifacts").is_dir():
        raise RunFolderError(_OLD.format(run=run, why="has no grid.json (written before 2026-11)"))
    if not path.is_file():
        if dry:
            return
        run.mkdir(parents=True, exist_ok=True)
        _write(path, {**mine, "added": [], "inputs": inputs, "threads": threads})
        return threads
    try:
        held = json.loads(path.read_text())
        held["hash"], held["labels"]  # noqa: B018 - the keys every grid.json has
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{path} is corrupt ({type(exc).__name__}: {exc}): this folder's grid cannot be checked; "
                             "use another --out (the artifacts/ inside are kept)") from None
    if held.get("schema") != SCHEMA:
        why = (f"was written under hash schema {held['schema']}, this cloakbench reads {SCHEMA}" if "schema" in held
               else "was written before hash schema 1 (cloakbench before 2026-12-08)")
        raise RunFolderError(_OLD.format(run=run, why=why))
    changed = _changed_inputs(held, inputs)
    if changed:
        raise RunFolderError(f"run folder {run} was made with other photos of {', '.join(changed)}: their results "
                             "would be averaged with the new ones as repeats; use another --out (or put the photos back)")
    new_inputs = any(i not in held.get("inputs", {}) for i in inputs)  # new identities (or a folder from before)
    pinned = held.get("threads") or threads
    if held["hash"] == mine["hash"]:
        if (new_inputs or held.get("threads") != pinned) and not dry:
            _write(path, {**held, "inputs": {**held.get("inputs", {}), **inputs}, "threads": pinned})
        return pinned
    if not add:
        raise RunFolderError(f"run folder {run} holds grid {held['name']!r} ({held['hash']}), not {mine['name']!r} "
                             f"({mine['hash']}): use another --out, or --add to add this grid's cells to it")
    clashes = [f"{kind} {label!r}" for kind, labels in mine["labels"].items() for label, h in labels.items()
               if held["labels"].get(kind, {}).get(label, h) != h]
    if clashes:
        raise RunFolderError(f"cannot add grid {mine['name']!r} to {run}: {', '.join(clashes)} would name different "
                             f"work than in grid {held['name']!r}; rename them")
    if dry:
        return pinned
    new_threads = held.get("threads") != pinned
    held["threads"] = pinned
    for kind, labels in mine["labels"].items():
        held["labels"].setdefault(kind, {}).update(labels)
    entry = {"name": mine["name"], "hash": mine["hash"]}
    if entry not in held["added"] or new_inputs or new_threads:
        if entry not in held["added"]:
            held["added"].append(entry)
        held["inputs"] = {**held.get("inputs", {}), **inputs}
        _write(path, held)
    return pinned


def _write(path: Path, obj: dict) -> None:
    from ..images import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())
