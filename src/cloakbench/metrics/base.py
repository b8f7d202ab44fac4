"""Metric base class, result type, registry and statistics helpers.

A metric is a configured object called on images (``B x 3 x H x W`` in [0, 1]) and optional
references; it returns a :class:`MetricResult` with the aggregate, the per-image values and what a
reader needs to interpret them (direction, range, backend, how many images had no face). A metric
whose model is missing raises a clear error; it never returns a made-up number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..registry import Registry


@dataclass
class MetricResult:
    """The outcome of one metric on one image set.

    ``value`` is None when the metric is undefined for the set (e.g. ISM when no image has a face
    under the ``empty="skip"`` policy); ``per_image`` holds None for images the metric skipped.
    """

    name: str
    value: float | None
    per_image: list[float | None]
    higher_better: bool | None
    backend: str = ""
    n: int = 0
    n_no_face: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Metric:
    """Base class. Subclasses set the metadata and implement :meth:`compute`."""

    name: ClassVar[str] = ""
    higher_better: ClassVar[bool | None] = True  # None: no direction (fidelity / budget)
    value_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    needs_face: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    paired: ClassVar[bool] = False  # compares image i with reference i (fidelity, budget): paired by file name
    licence: ClassVar[str] = "Apache-2.0"
    reference: ClassVar[str] = ""  # the reference code its defaults come from, "owner/repo path/file.py" ("": our own)
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the optional packages it needs (pyproject extras)
    backend: str = "torch"

    def __call__(self, images: torch.Tensor, references: torch.Tensor | None = None) -> MetricResult:
        if self.needs_reference and references is None:
            raise ValueError(f"metric {self.label} needs reference images (references=...)")
        return self.compute(images, references)

    def compute(self, images: torch.Tensor, references: torch.Tensor | None) -> MetricResult:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """Name with the backend, e.g. ``ism[dlib]``: substitutes never pass as the paper's metric."""
        return f"{self.name}[{self.backend}]" if self.backend and self.backend != "torch" else self.name

    def result(self, value: float | None, per_image: Sequence[float | None], **kw: Any) -> MetricResult:
        return MetricResult(self.label, value, list(per_image), self.higher_better, self.backend,
                            len(per_image), **kw)

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        return {"higher_better": cls.higher_better, "range": cls.value_range, "needs_face": cls.needs_face,
                "needs_reference": cls.needs_reference, "licence": cls.licence}


METRICS: Registry[Metric] = Registry("metric", group="cloakbench.metrics")


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register under ``cls.name`` with the class metadata."""
    METRICS.register(cls.name, **cls.metadata())(cls)
    return cls


def create_metric(name: str, **overrides: Any) -> Metric:
    """Build a metric by name; ``"ism[dlib]"`` is shorthand for ``create_metric("ism", backend="dlib")``."""
    m = re.fullmatch(r"\s*([\w\-.:/]+?)\s*(?:\[\s*([\w\-.]+)\s*\])?\s*", name)  # a plugin: module:Class
    if m is None:
        raise ValueError(f"cannot read metric name {name!r}; write e.g. 'ism' or 'ism[dlib]'")
    base, backend = m.group(1), m.group(2)
    if backend is not None:
        overrides.setdefault("backend", backend)
    return METRICS.create(base, **overrides)


def list_metrics() -> list[str]:
    return METRICS.names()


def nanmean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values; None when there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof=1) of finite values, and their count.

    Use it over identities and seeds, as the paper's "mean ± std" tables do.
    """
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(v)])
    if finite.size == 0:
        return None, None, 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), std, int(finite.size)


def wilcoxon(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.01) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test on paired values (the paper marks p <= 0.01).

    ``a[i]`` and ``b[i]`` must be the same unit (image / prompt / identity): state the pairing.
    Uses scipy when available (exact for small n without ties), else the normal approximation with
    tie and zero corrections (Pratt's zero handling is not used: zero differences are dropped).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must have the same length, got {x.shape} and {y.shape}")
    d = x - y
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return {"n": 0, "statistic": 0.0, "p_value": 1.0, "significant": False, "method": "all pairs equal"}
    try:
        from scipy.stats import wilcoxon as sp_wilcoxon

        res = sp_wilcoxon(d)
        stat, p, method = float(res.statistic), float(res.pvalue), "scipy"
    except ImportError:
        from math import erf, sqrt

        ranks = _rank(np.abs(d))
        w_plus = float(ranks[d > 0].sum())
        mean = n * (n + 1) / 4
        _, counts = np.unique(np.abs(d), return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24 - float((counts**3 - counts).sum()) / 48
        z = (w_plus - mean) / sqrt(var) if var > 0 else 0.0
        p = 2 * (1 - 0.5 * (1 + erf(abs(z) / sqrt(2))))
        stat, method = min(w_plus, n * (n + 1) / 2 - w_plus), "normal approximation"
    return {"n": n, "statistic": stat, "p_value": p, "significant": p <= alpha, "method": method}


def sign_flip_test(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.01, exact_max: int = 16,
                   draws: int = 200_000, seed: int = 0) -> dict[str, Any]:
    """Two-sided paired sign-flip permutation test of the mean difference ``mean(a - b)``.

    Under H0 each pair's difference is symmetric about 0, so every sign pattern is equally likely: the
    p-value is the share of the ``2**n`` patterns whose ``|mean|`` reaches the observed one (exact for
    ``n <= exact_max``; above, ``draws`` random patterns from ``seed``, p = (hits + 1) / (draws + 1)).
    Unlike the Wilcoxon normal approximation it is valid at any n; its smallest p is ``2 / 2**n``, so
    p <= 0.01 needs at least 8 pairs: pair per image (identity x seed x prompt x sampling seed) when
    cells have only 4 identities, as the paper's 128 images per cell allow. ``a[i]``, ``b[i]`` must be
    the same unit; pairs with zero difference stay in (they only add ties).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must have the same length, got {x.shape} and {y.shape}")
    d = x - y
    n = int(d.size)
    if n == 0 or not np.any(d):
        return {"n": n, "statistic": 0.0, "p_value": 1.0, "significant": False, "method": "sign-flip (no difference)"}
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= exact_max:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        p = float(np.mean(np.abs(signs @ d) / n >= observed - tol))
        method = f"sign-flip, exact ({2**n} patterns)"
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, draws, 10_000):
            signs = rng.choice([-1.0, 1.0], size=(min(10_000, draws - start), n))
            hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
        p = (hits + 1) / (draws + 1)
        method = f"sign-flip, {draws} random patterns (seed {seed})"
    return {"n": n, "statistic": float(d.mean()), "p_value": p, "significant": p <= alpha, "method": method}


def _rank(v: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) with ties sharing their mean rank."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size)
    sorted_v = v[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


METRICS.base = Metric  # plugins (module:Class names, entry points) must subclass it
