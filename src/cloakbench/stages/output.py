"""Where a stage's outputs go: a work folder beside the destination, moved into place when complete."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..images import atomic_write_bytes


def write_record(folder: Path, name: str, record: dict[str, Any]) -> None:
    """``folder/name`` as indented JSON, written atomically (non-finite floats as null)."""
    atomic_write_bytes(folder / name, json.dumps(_finite(record), indent=2, default=str).encode())


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A fresh work folder ``<parent>/.<name>.partial``; on success its files move into ``final``
    (created if needed; files of the same name are replaced, subfolders swapped whole). On error
    the work folder is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".{final.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        yield work
        final.mkdir(parents=True, exist_ok=True)
        for item in sorted(work.iterdir()):
            target = final / item.name
            if target.is_dir() and item.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
