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
    except ImportError as exc:
        raise ImportError(f"restoration and SR checkpoints need spandrel: `pip install 'cloakbench[sr]'` ({exc})") from exc
    try:  # CodeFormer / GFPGAN / RestoreFormer architectures: only these need the non-commercial extra
        import spandrel_extra_arches
    except ImportError:
        spandrel_extra_arches = None
    from ..safe_tensors import load_spandrel

    if spandrel_extra_arches is not None:
        spandrel_extra_arches.install(ignore_duplicates=True)
    try:
        desc = load_spandrel(path)  # tensors only: a TorchScript or pickled-code file is refused before spandrel sees it
    except Exception as exc:  # noqa: BLE001 - an architecture spandrel alone does not know
        if spandrel_extra_arches is None and type(exc).__name__ == "UnsupportedModelError":
            raise ImportError(f"{path}: face restoration (CodeFormer, GFPGAN, RestoreFormer) needs `pip install "
                              "'cloakbench[codeformer]'` (non-commercial CodeFormer licence)") from exc
        raise
    return desc.to(device).eval()


def resolve_weights(weights: str) -> str:
    """A weights-manager name (``codeformer``, ``gfpgan-v1.4``, ...) or a path -> an existing file."""
    from .. import weights as wm

    if weights in {s.name for s in wm.list_specs()}:
        return str(wm.resolve(weights))
    if not Path(weights).is_file():
        raise FileNotFoundError(f"face restoration checkpoint {weights} does not exist")
    return weights
