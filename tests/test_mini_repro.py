"""Byte reproducibility of the shipped mini weights (#16 item 7): the kernel fingerprint, the per-model
comparison, and a real retraining of one shipped model from scratch."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cloakbench.minilab.repro import compare_folders, kernel_fingerprint, kernel_verdict
from cloakbench.models.mini.stack import PARTS, SHIPPED


def test_kernel_fingerprint_is_stable_and_its_verdict_names_what_differs():
    a, b = kernel_fingerprint(), kernel_fingerprint()
    assert a == b and set(a) == {"gemm", "attention", "elementwise", "conv", "numpy"}
    assert all(len(v) == 16 for v in a.values())
    assert "(expect the same bytes)" in kernel_verdict(a, {"kernels": dict(a)})
    partly = kernel_verdict(a, {"kernels": dict(a), "same_bytes_on_these_kernels": {"clip": True, "unet": False}})
    assert "expect the same bytes except unet" in partly
    verdict = kernel_verdict(a, {"kernels": {**a, "conv": "0" * 16, "gemm": "1" * 16}})
    assert "conv, gemm round differently" in verdict and "expect different bytes" in verdict
    assert "records none" in kernel_verdict(a, {})


def test_compare_folders_counts_changed_values(tmp_path):
    for name in PARTS:
        shutil.copy(SHIPPED / f"{name}.safetensors", tmp_path / f"{name}.safetensors")
    assert all(n == 0 for n, _ in compare_folders(tmp_path, SHIPPED).values())
    sd = load_file(str(tmp_path / "sr.safetensors"))
    key = sorted(sd)[0]
    flat = sd[key].reshape(-1).clone()
    flat[3] = flat[3] + 1
    sd[key] = flat.reshape(sd[key].shape)
    save_file(sd, str(tmp_path / "sr.safetensors"))
    sd = load_file(str(tmp_path / "pixel.safetensors"))
    sd.pop(sorted(sd)[-1])
    save_file(sd, str(tmp_path / "pixel.safetensors"))
    diff = compare_folders(tmp_path, SHIPPED)
    assert diff["sr"][0] == 1
    assert diff["pixel"][0] == diff["pixel"][1] > 0  # a missing tensor: every value counts as different
    assert all(diff[n][0] == 0 for n in PARTS if n not in ("sr", "pixel"))


@pytest.mark.slow
def test_sr_retrained_from_scratch_has_the_shipped_bytes():
    """The SR x2 model, retrained from scratch with the FULL budget (600 steps, ~30 s), equals the shipped
    file byte for byte, on a machine whose float kernels round as the shipped weights' machine did (the
    manifest's fingerprint; other CPU types give other bytes: benchmarks/README.md)."""
    from cloakbench.minilab.train_data import FULL, Data
    from cloakbench.minilab.train import _as_shipped, train_sr

    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(manifest["threads"])
    try:
        kernels = kernel_fingerprint()
        if kernels != manifest["kernels"]:
            pytest.skip(kernel_verdict(kernels, manifest))
        assert manifest["same_bytes_on_these_kernels"]["sr"]
        sr = _as_shipped(train_sr(Data(FULL), FULL, lambda _: None))
    finally:
        torch.set_num_threads(threads)
    shipped = load_file(str(SHIPPED / "sr.safetensors"))
    ours = {k: v.half() if v.is_floating_point() else v for k, v in sr.state_dict().items()}
    assert ours.keys() == shipped.keys()
    assert all(torch.equal(ours[k], shipped[k]) for k in shipped)
