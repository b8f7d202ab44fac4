"""Files and folders made through ``tempfile`` (written beside, then renamed into place) get the modes the
user's umask gives every other file (``tempfile`` makes them 0600 / 0700 whatever the umask, #37 item 6)."""

from __future__ import annotations

import functools
import os
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
