"""Weights files as tensors only: no code from any file a user or a grid names (#37 item 1).

A checkpoint is read here by its *content*, whatever its suffix, before any library loader sees it:

- safetensors (an 8-byte header length, then a JSON header): read with ``safetensors``;
- a ``torch.save`` archive (zip) or a legacy pickle: read with ``torch.load(weights_only=True)``, torch's
  restricted unpickler that builds tensors and containers only and refuses any other global;
- a **TorchScript** archive (a zip holding ``constants.pkl`` or a ``code/`` folder) is refused: loading one
  runs its ``__setstate__`` (spandrel sends ``.pt`` files to ``torch.jit.load``, where a planted method
  wrote a file of its choosing); so is anything else.

:func:`read_state_dict` returns the nested mapping of tensors; :func:`load_spandrel` hands it to spandrel
(``ModelLoader.load_from_state_dict``), never the path.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

from .errors import InputError


def kind(path: Path) -> str:
    """``safetensors``, ``torch-zip``, ``torchscript``, ``pickle`` or ``unknown``, read from the first bytes
    (and, for a zip, its member names)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        script = any(n.endswith("/constants.pkl") or "/code/" in n or n == "constants.pkl" for n in names)
        return "torchscript" if script else "torch-zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol 2+ (torch's legacy format starts with a pickled magic number)
        return "pickle"
    return "unknown"


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a weights file (nested mappings kept: ``params_ema``, ``state_dict``, ...); an
    :class:`InputError` naming the file when it is TorchScript, holds pickled code, or is no weights file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    k = kind(path)
    if k == "torchscript":
        raise InputError(f"{path} is a TorchScript archive: loading it would run the code it holds; cloakbench "
                         "reads weights as tensors only (convert it to .safetensors or a state-dict .pth)")
    if k == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a corrupt header, named
            raise InputError(f"{path}: not a readable safetensors file ({exc})") from exc
    if k in ("torch-zip", "pickle"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise InputError(f"{path} holds pickled objects other than tensors (code could run when they load); "
                             f"refused. ({str(exc).splitlines()[0]})") from exc
        except (RuntimeError, EOFError, ValueError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a readable weights file ({exc})") from exc
        if not isinstance(state, dict):
            raise InputError(f"{path} holds a {type(state).__name__}, not a mapping of tensors")
        return state
    raise InputError(f"{path} is not a weights file cloakbench can read safely (safetensors, or a torch state dict)")


def load_spandrel(path: str | Path):
    """A spandrel model descriptor built from the tensors of ``path`` (:func:`read_state_dict`)."""
    import spandrel

    return spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(read_state_dict(path)))
