"""The purify stage: one purifier (or a ``+`` composition) over a set of images, output at the input size."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..images import DEFAULT_MIN_SIZE, read_images, save_images
from .output import unique_stems, write_record

log = logging.getLogger(__name__)


def purify(
    inputs: str | Path | Sequence[Path],
    out: Path,
    *,
    method: str,
    options: dict[str, Any] | None = None,
    resolution: int | None = 512,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    clean: Sequence[Path] | None = None,
    skip_bad: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Purify the images of ``inputs`` with ``method``; write ``out/<stem>.png`` and ``out/purification.json``.

    Inputs are resized and center-cropped to ``resolution`` (``None`` keeps sizes). Outputs always
    have their input's size (purifiers that upscale, like CodeSR, are resized back with antialiased
    bicubic: :meth:`~cloakbench.purify.Purifier.purify_same_size`), so the next stage sees what it
    would have seen without the red-team. With ``clean`` (the unprotected sources, paired by stem),
    the record holds PSNR / SSIM / LPIPS of the purified images against them (the paper's Table 2).
    """
    from ..models.device import pick_device
    from ..purify import create_purifier

    loaded = read_images(inputs, resolution, min_size=min(DEFAULT_MIN_SIZE, resolution or DEFAULT_MIN_SIZE),
                         on_error="skip" if skip_bad else "raise")
    names = unique_stems(loaded.paths)
    dev = str(pick_device(device))
    try:
        purifier = create_purifier(method, seed=seed, device=dev, **({"dtype": dtype} if dtype else {}), **(options or {}))
    except TypeError as exc:  # an unknown option: the purifier's message lists the valid ones
        raise InputError(str(exc)) from None
    images = purifier.purify_same_size(loaded.images)
    save_images(images, out, names)
    record = {"method": method, "config": purifier.config(), "device": dev, "resolution": resolution,
              "seconds_per_image": purifier.stats["seconds_per_image"], "files": [n + ".png" for n in names],
              "sources": [str(p) for p in loaded.paths], "skipped": {str(k): v for k, v in loaded.problems.items()},
              "fidelity": fidelity(images, names, clean) if clean else {}, **faces_found(purifier, names), **(extra or {})}
    write_record(out, "purification.json", record)
    return record


def faces_found(purifier, names: list[str]) -> dict[str, Any]:
    """``{"faces_per_image": {file: n}}`` when a face-restoration stage ran (CodeFormer: 0 = restoration
    skipped for that image, only resampled), else ``{}``."""
    for part in getattr(purifier, "parts", [purifier]):
        found = getattr(part, "faces_found", None)
        if found is not None and len(found) == len(names):
            return {"faces_per_image": {n + ".png": int(k) for n, k in zip(names, found)}}
    return {}


def fidelity(purified: torch.Tensor, names: list[str], clean: Sequence[Path]) -> dict[str, float | None]:
    """PSNR / SSIM / LPIPS of ``purified`` against the ``clean`` files of the same stems (read at the
    purified size); ``{}`` when a stem has no clean file. A metric whose package or weights are missing
    is recorded as None."""
    from ..metrics import create_metric

    by_stem = {Path(p).stem: Path(p) for p in clean}
    if any(n not in by_stem for n in names):
        return {}
    ref = read_images([by_stem[n] for n in names], purified.shape[-1], min_size=None).images
    out: dict[str, float | None] = {}
    for name in ("psnr", "ssim", "lpips"):
        try:
            out[name] = create_metric(name)(purified, ref).value
        except Exception as exc:  # noqa: BLE001 - a missing optional metric is recorded, not fatal
            log.info("fidelity %s unavailable: %s", name, exc)
            out[name] = None
    return out
