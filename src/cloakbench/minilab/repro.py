"""Byte reproducibility of the mini weights (#16 item 7): which float kernels this machine runs, and
whether a retrained folder holds the shipped bytes.

Same seed, torch build and thread count give the same weights on one CPU type; across CPU types the
float kernels (MKL's GEMM, oneDNN's convolutions, torch's vectorised element-wise ops and attention)
round differently and every model's bytes drift while its validation figures stay within a few points
(benchmarks/README.md). :func:`kernel_fingerprint` hashes what those kernels return on fixed inputs, in
the shapes and ops the mini nets use: the manifest records it, and ``cloakbench mini train`` says before
an 80-minute run whether this machine rounds as the one that made the shipped weights did. None of this
pins kernels: pins were measured to change the shipped bytes here or to be ignored (MKL on AMD), see
benchmarks/README.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def kernel_fingerprint() -> dict[str, str]:
    """Hashes (16 hex digits) of fp32 results of the kernel families the mini training runs, on inputs
    drawn from a fixed seed, with this process's thread count: ``gemm`` (MKL: linear layers), ``attention``
    (torch SDPA), ``elementwise`` (GELU, SiLU, exp, softmax, layer/group norm: torch's vector kernels),
    ``conv`` (oneDNN: forward and both backward passes) and ``numpy`` (the world's float maths: sin, exp,
    power). Equal dicts mean the same roundings on these probes (a proxy, not a proof, for equal weights)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 256, generator=g), torch.randn(256, 384, generator=g)
    q = torch.randn(8, 4, 77, 32, generator=g)
    x = torch.randn(16, 64, 16, 16, generator=g).requires_grad_()
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).requires_grad_()
    y = F.conv2d(x, w, padding=1)
    y.square().sum().backward()
    v = np.random.default_rng(0).random(4096) * 8
    return {
        "gemm": _digest(a @ b, torch.bmm(q[0], q[0].transpose(1, 2))),
        "attention": _digest(F.scaled_dot_product_attention(q, q, q)),
        "elementwise": _digest(F.gelu(a), F.silu(a), a.exp(), F.softmax(a, -1), F.layer_norm(a, (256,)),
                               F.group_norm(x.detach(), 8)),
        "conv": _digest(y, x.grad, w.grad),
        "numpy": hashlib.sha256(np.concatenate([np.sin(v), np.exp(-v), v ** 1.7]).tobytes()).hexdigest()[:16],
    }


def kernel_verdict(current: dict[str, str], manifest: dict) -> str:
    """One line comparing this machine's :func:`kernel_fingerprint` with a weights folder's manifest:
    ``kernels`` (the fingerprint of a machine that reproduced its files) and, where not every file was
    reproduced there, ``same_bytes_on_these_kernels`` (model -> bool)."""
    ref = manifest.get("kernels")
    if not ref:
        return "float kernels: the reference manifest records none; bytes cannot be predicted"
    differ = sorted(k for k in current if ref.get(k) != current[k])
    if differ:
        return (f"float kernels: {', '.join(differ)} round differently from the machine that made the reference "
                "weights: expect different bytes and validation figures within a few points (benchmarks/README.md)")
    made_elsewhere = sorted(k for k, same in manifest.get("same_bytes_on_these_kernels", {}).items() if not same)
    if made_elsewhere:
        return ("float kernels: same roundings as a machine that reproduced the reference weights: expect the same "
                f"bytes except {', '.join(made_elsewhere)} (made on another CPU type: benchmarks/README.md)")
    return "float kernels: same roundings as the machine that made the reference weights (expect the same bytes)"


def compare_folders(new: str | Path, ref: str | Path) -> dict[str, tuple[int, int]]:
    """Per model, (values that differ, values) between two mini weight folders' fp16 safetensors; a
    model with different tensor names or shapes counts as all values different."""
    from safetensors.torch import load_file

    from ..models.mini.stack import PARTS

    out = {}
    for name in PARTS:
        a, b = load_file(str(Path(new) / f"{name}.safetensors")), load_file(str(Path(ref) / f"{name}.safetensors"))
        total = sum(t.numel() for t in b.values())
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in b):
            out[name] = (total, total)
            continue
        out[name] = (sum(int((a[k] != b[k]).sum()) for k in b), total)
    return out
