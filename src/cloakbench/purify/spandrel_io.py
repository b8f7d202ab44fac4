"""Loading restoration and super-resolution checkpoints through spandrel (one place for both kinds).

CodeFormer / GFPGAN / RestoreFormer (:mod:`.codeformer`, via ``spandrel_extra_arches``) and any
spandrel SR checkpoint (:mod:`.sr`) are read here: a weights-manager name or a path is resolved to a
file, then loaded once per (file, device), as tensors only (:mod:`cloakbench.safe_tensors`: a TorchScript
archive or a pickle holding code is refused by its content, whatever its suffix).
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=4)
def load_restorer(path: str, device: str = "cpu"):
    """A spandrel model descriptor for a CodeFormer / GFPGAN / RestoreFormer checkpoint file."""
    try:
        import spandrel  # noqa: F401  (the extra is installed)
        import spandrel_extra_arches
    except ImportError as exc:
        raise ImportError(f"face restoration needs `pip install 'cloakbench[codeformer]'` (non-commercial "
                          f"CodeFormer licence) ({exc})") from exc
    from ..safe_tensors import load_spandrel

    spandrel_extra_arches.install(ignore_duplicates=True)
    desc = load_spandrel(path)  # tensors only: a TorchScript or pickled-code file is refused before spandrel sees it
    return desc.to(device).eval()


def resolve_weights(weights: str) -> str:
    """A weights-manager name (``codeformer``, ``gfpgan-v1.4``, ...) or a path -> an existing file."""
    from .. import weights as wm

    if weights in {s.name for s in wm.list_specs()}:
        return str(wm.resolve(weights))
    if not Path(weights).is_file():
        raise FileNotFoundError(f"face restoration checkpoint {weights} does not exist")
    return weights
