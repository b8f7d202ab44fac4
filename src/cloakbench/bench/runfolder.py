"""What a run folder holds and who may write it: the grid's identity (``grid.json``) and a lock (``.lock``).

A run folder belongs to one grid: at first use it records the config's name and hash and, for every
cell label (protection, purification, recipe), the hash of what the label stands for. A different
grid in the same folder is refused (naming both) unless the user adds to it on purpose; even then a
label that would mean something else (two recipes named ``db``, 8 and 4 steps) is refused, so results
of different work are never averaged as repeats. One process at a time holds ``.lock`` (pid, host,
start); a lock left by a dead process on this host is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from .spec import canonical

GRID = "grid.json"
LOCK = ".lock"


def _hash(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:16]


def identity(cfg) -> dict[str, Any]:
    """``{"name", "hash", "labels": {kind: {label: hash}}}`` of a :class:`~cloakbench.bench.BenchConfig`
    (the hash leaves out where the data lives and the executor: moving a run folder keeps it)."""
    dump = cfg.model_dump(mode="json")
    dump.pop("executor", None)
    dump["data"].pop("root", None)
    labels = {"protection": {protection_label(p): _hash(p.model_dump(mode="json")) for p in cfg.protections},
              "purification": {p: _hash([p, cfg.purify_options.get(p, {})]) for p in cfg.purifications},
              "recipe": {r.name: _hash(r.model_dump(mode="json")) for r in cfg.recipes}}
    return {"name": cfg.name, "hash": _hash(dump), "labels": labels}


def protection_label(prot) -> str:
    """The cell label of a protection spec: ``none``, or ``method@eps`` (``advdm@8/255``)."""
    if prot.method.lower() == "none":
        return "none"
    return prot.method + (f"@{prot.eps}" if prot.eps is not None else "")


def claim(run: Path, cfg, *, add: bool = False) -> None:
    """Record ``cfg`` as the run folder's grid, or check that it is the same grid (``add``: a different
    grid may join when no label changes meaning). Raises :class:`RunFolderError`."""
    mine = identity(cfg)
    path = run / GRID
    if not path.is_file():
        run.mkdir(parents=True, exist_ok=True)
        _write(path, {**mine, "added": []})
        return
    held = json.loads(path.read_text())
    if held["hash"] == mine["hash"]:
        return
    if not add:
        raise RunFolderError(f"run folder {run} holds grid {held['name']!r} ({held['hash']}), not {mine['name']!r} "
                             f"({mine['hash']}): use another --out, or --add to add this grid's cells to it")
    clashes = [f"{kind} {label!r}" for kind, labels in mine["labels"].items() for label, h in labels.items()
               if held["labels"].get(kind, {}).get(label, h) != h]
    if clashes:
        raise RunFolderError(f"cannot add grid {mine['name']!r} to {run}: {', '.join(clashes)} would name different "
                             f"work than in grid {held['name']!r}; rename them")
    for kind, labels in mine["labels"].items():
        held["labels"].setdefault(kind, {}).update(labels)
    held["added"].append({"name": mine["name"], "hash": mine["hash"]})
    _write(path, held)


def _write(path: Path, obj: dict) -> None:
    from ..images import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def locked(run: Path) -> Iterator[None]:
    """Hold ``run/.lock`` for the duration; :class:`RunFolderError` naming the holder when another live
    process has it. A stale lock (its pid gone, same host) is taken over."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                held = json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                held = {}
            if held.get("host") == me["host"] and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise RunFolderError(f"run folder {run} is in use by pid {held.get('pid', '?')} on {held.get('host', '?')} "
                                 f"since {held.get('started', '?')}; wait for it, or remove {path} if that process "
                                 "is gone") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
