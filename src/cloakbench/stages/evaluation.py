"""The evaluate stage: identity, quality, fidelity and budget metrics of a set of images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

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
                           min_size=None if reference_size is None else min(DEFAULT_MIN_SIZE, reference_size))
    built = [create_metric(name, **(options or {}).get(name.split("[")[0], {})) for name in metrics]
    for name, metric in zip(metrics, built):
        if metric.needs_reference and refs is None:
            raise InputError(f"metric {name} needs reference images (--reference)")
    paired = _pair_by_name(gen.paths, refs) if any(m.paired for m in built) else None
    out = Evaluation(files=[p.name for p in gen.paths])
    done: dict[str, Any] = {}
    for name, metric in zip(metrics, built):
        t0 = time.perf_counter()
        ref = (paired if metric.paired else refs.images) if metric.needs_reference else None
        parts = (getattr(metric, "ims_name", None), "q")
        if parts[0] in done and parts[1] in done:  # avg[B] next to ims[B] and q: combine, do not recompute
            result = metric.combine(done[parts[0]], done[parts[1]])
        else:
            result = metric(gen.images, ref)
        done[name] = result
        out.results.append(result)
        out.seconds[result.name] = time.perf_counter() - t0
    return out


def _pair_by_name(files: Sequence[Path], refs) -> "torch.Tensor":
    """The references in the order of ``files``, matched by stem (``x.png`` <-> ``x.jpg``), or, for a file
    whose stem has no exact match, by the one reference stem it ends with after a ``_`` or ``-`` (protection
    tools prefix their outputs: Anti-DreamBooth / MetaCloak's ``noisy_0012_01.png`` <-> ``0012_01.png``).
    An :class:`InputError` lists every unmatched, ambiguous or doubly matched name."""
    from .output import unique_stems

    unique_stems(refs.paths)
    by_stem = {p.stem: i for i, p in enumerate(refs.paths)}
    order: list[int | None] = []
    problems = []
    for f in files:
        stem = Path(f).stem
        hits = [by_stem[stem]] if stem in by_stem else [i for s, i in by_stem.items() if stem.endswith(("_" + s, "-" + s))]
        order.append(hits[0] if len(hits) == 1 else None)
        if len(hits) > 1:
            problems.append(f"{Path(f).name} matches {', '.join(refs.paths[i].name for i in hits)}")
        elif not hits:
            problems.append(f"{Path(f).name} matches no reference")
    for i, p in enumerate(refs.paths):
        n = order.count(i)
        if n != 1:
            problems.append(f"reference {p.name} is matched by {n} images")
    if problems:
        raise InputError("fidelity and budget metrics compare each image with the reference of the same name: "
                         + "; ".join(problems))
    return refs.images[order]


def write_metrics(folder: Path, evaluation: Evaluation, name: str = "metrics.json") -> None:
    """Write ``evaluation`` (per-image values included) to ``folder/name``."""
    write_record(Path(folder), name, evaluation.as_dict())
