"""Writing beside, then renaming into place: :func:`staged` (a folder replaced whole, never half) and
:func:`as_umask` (files and folders made through ``tempfile`` get the modes the user's umask gives every other
file; ``tempfile`` makes them 0600 / 0700 whatever the umask, #37 item 6)."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask(path: str | os.PathLike[str], *, directory: bool | None = None) -> None:
    """``chmod`` ``path`` to 0666 (files) or 0777 (folders) less the umask."""
    p = Path(path)
    is_dir = p.is_dir() if directory is None else directory
    os.chmod(p, (0o777 if is_dir else 0o666) & ~_umask())


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A fresh work folder beside ``final`` (``.<name>.partial-*``) for a stage to write into. On success the
    work folder replaces ``final`` whole: an existing ``final`` is first renamed to ``.<name>.old-<pid>``,
    then the work folder takes its place, then the old one is removed. On an error the old folder is put
    back, so ``final`` is either the old or the new folder; a run killed between the two renames leaves
    ``.<name>.old-<pid>``, which the next call puts back before it starts. Call :func:`check_destination`
    first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for left in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not final.exists():
            left.replace(final)  # a swap killed halfway: the previous results come back
        else:
            shutil.rmtree(left, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    as_umask(work, directory=True)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    moved = False
    try:
        yield work
        if final.exists():
            final.replace(old)
            moved = True
        work.replace(final)
        moved = False
    finally:
        if moved:  # the swap failed after the old folder left: put it back
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            old.replace(final)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        release_output(final)  # the write is over: the output folder's lock (if check_destination took it) goes


@contextmanager
def locked(run: Path, *, lock: Path | None = None, what: str = "run folder") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock`` (default ``run/.lock``) for the duration (the kernel releases it
    when the process ends, however it ends: a lock is never stale); :class:`RunFolderError` naming the holder
    (pid, host, start, written into the file) when another process has it."""
    import fcntl
    import json
    import socket
    import time

    from .errors import RunFolderError

    path = lock or run / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        try:
            held = json.loads(fh.read() or "{}")
        except json.JSONDecodeError:
            held = {}
        fh.close()
        raise RunFolderError(f"{what} {run} is in use by pid {held.get('pid', '?')} on {held.get('host', '?')} "
                             f"since {held.get('started', '?')}; wait for it to finish") from None
    try:
        fh.seek(0)
        fh.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, fh)
        fh.flush()
        yield
    finally:
        fh.seek(0)
        fh.truncate()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


_HELD: dict[Path, object] = {}


def hold_output(final: Path) -> None:
    """Hold the lock of the output folder ``final`` (``.<name>.lock`` beside it) until this process ends, so a
    second command writing the same folder is refused naming the first (#37 item 2); re-entrant."""
    final = Path(final).resolve()
    if final in _HELD:
        return
    ctx = locked(final, lock=final.parent / f".{final.name}.lock", what="output folder")
    ctx.__enter__()
    _HELD[final] = ctx


def release_output(final: Path) -> None:
    """Let go of :func:`hold_output`'s lock (a refused output leaves no lock file behind)."""
    final = Path(final).resolve()
    ctx = _HELD.pop(final, None)
    if ctx is not None:
        ctx.__exit__(None, None, None)
        (final.parent / f".{final.name}.lock").unlink(missing_ok=True)
