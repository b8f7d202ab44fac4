"""Device and dtype choice: explicit always wins; otherwise cuda > mps > cpu; fp32, or half precision for
inference on CUDA (:func:`default_dtype`)."""

from __future__ import annotations

import torch

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first available of cuda, mps, cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: str | torch.device | None, half: str = "bf16") -> torch.dtype:
    """The inference dtype when none is given: ``half`` (bf16, or fp16 where a reference used it) on CUDA,
    fp32 elsewhere (CPU half precision is slow and inexact). Training and PGD choose their own."""
    return parse_dtype(half) if pick_device(device).type == "cuda" else torch.float32


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp32" | "fp16" | "bf16"`` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16") from None
