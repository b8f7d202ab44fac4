"""Where a stage's outputs go, and the guards that keep a user's files: a destination is checked before
any work (:func:`check_destination`), outputs are named one per input (:func:`unique_stems`), and a stage
writes into a work folder beside the destination that replaces it whole when complete (:func:`staged`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..images import atomic_write_bytes
from ..fsmode import hold_output, release_output, staged  # noqa: F401  (staged: the stages' API)


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


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """The stems that name each input's outputs (``a.jpg`` -> ``a.png``); an :class:`InputError` listing
    the files when two inputs share a stem (``a.png`` and ``a.jpg`` would write one ``a.png``)."""
    by_stem: dict[str, list[Path]] = {}
    for p in paths:  # case-folded: A.png and a.jpg are one file on macOS and Windows
        by_stem.setdefault(Path(p).stem.casefold(), []).append(Path(p))
    clashes = {s: ps for s, ps in by_stem.items() if len(ps) > 1}
    if clashes:
        listed = "; ".join(", ".join(str(p) for p in ps) for ps in clashes.values())
        raise InputError(f"inputs share a name (their outputs would overwrite each other): {listed}; rename them")
    return [Path(p).stem for p in paths]


def check_destination(final: Path, inputs: Sequence[Path] = (), *, overwrite: bool = False,
                      record: str | None = None) -> None:
    """Refuse an output folder that would lose data, before any work: a file in its place, a folder that
    holds an input (the output folder is the input folder, or contains it), or, without ``overwrite``,
    a folder that already holds results (``record``) or anything else."""
    final = Path(final)
    if final.is_symlink():
        raise InputError(f"output {final} is a symbolic link: give the folder it points to ({final.resolve()})")
    if final.exists() and not final.is_dir():
        raise InputError(f"output {final} is a file, not a folder")
    hold_output(final)  # first: a second command on the same folder is refused, naming this one (#37 item 2)
    try:
        _check(final, inputs, overwrite=overwrite, record=record)
    except InputError:
        release_output(final)
        raise


def _check(final: Path, inputs: Sequence[Path], *, overwrite: bool, record: str | None) -> None:
    root = final.resolve()
    held = [Path(p) for p in inputs if Path(p).resolve().is_relative_to(root)]
    if held:
        raise InputError(f"output folder {final} holds input file(s) ({', '.join(str(p) for p in held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}): writing there would replace them; choose another folder")
    if final.is_dir() and any(final.iterdir()):
        ours = record is not None and (final / record).is_file()
        if not overwrite:
            what = f"holds results ({record})" if ours else "is not empty"
            raise InputError(f"output folder {final} {what}; pass --overwrite to replace the whole folder")
        if not ours:  # --overwrite replaces a previous output of the same command, never a folder of other files
            raise InputError(f"output folder {final} is not empty and holds no {record}: --overwrite only replaces an "
                             "earlier output of this command; choose a new or empty folder")


