"""The evaluate stage: identity, quality, fidelity and budget metrics of a set of images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..images import DEFAULT_MIN_SIZE, read_images
from .output import write_record


@dataclass
class Evaluation:
    """Metric results in the order asked, the scored files, and each metric's seconds."""

    results: list = field(default_factory=list)  # cloakbench.metrics.MetricResult
    files: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """``{metric: {value, n, ..., "per_image": {file: value}}}``."""
        return {r.name: {**r.as_dict(), "per_image": dict(zip(self.files, r.per_image))} for r in self.results}


def evaluate(
    images: str | Path | Sequence[Path],
    references: str | Path | Sequence[Path] | None = None,
    *,
    metrics: Sequence[str],
    size: int | None = None,
    reference_size: int | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> Evaluation:
    """Score ``images`` (read at ``size``; None keeps their size) with each metric of ``metrics`` (names
    as :func:`cloakbench.metrics.create_metric` takes them, e.g. ``ism[dlib]``); ``references`` (read
    at ``reference_size``) are the clean photos of the same identity that reference metrics need.
    ``options`` maps a metric's base name to its keyword arguments (``{"clip_iqac": {"clip": ...}}``)."""
    from ..metrics import create_metric

    gen = read_images(images, size, min_size=None if size is None else min(DEFAULT_MIN_SIZE, size))
    refs = None
    if references is not None:
        refs = read_images(references, reference_size,
                           min_size=None if reference_size is None else min(DEFAULT_MIN_SIZE, reference_size)).images
    out = Evaluation(files=[p.name for p in gen.paths])
    for name in metrics:
        t0 = time.perf_counter()
        metric = create_metric(name, **(options or {}).get(name.split("[")[0], {}))
        if metric.needs_reference and refs is None:
            raise InputError(f"metric {name} needs reference images (--reference)")
        out.results.append(metric(gen.images, refs if metric.needs_reference else None))
        out.seconds[out.results[-1].name] = time.perf_counter() - t0
    return out


def write_metrics(folder: Path, evaluation: Evaluation, name: str = "metrics.json") -> None:
    """Write ``evaluation`` (per-image values included) to ``folder/name``."""
    write_record(Path(folder), name, evaluation.as_dict())
