"""A grid's effects with their uncertainty: the protection gap and each red-team's recovery, per identity,
with 95 % bootstrap intervals over identities (the unit the paper averages over; seeds are averaged
within an identity first).

    gap(P)          = M(clean) - M(P)                          per identity, then the mean
    recovered(P, R) = mean[M(P, R) - M(P)] / mean[M(clean) - M(P)]   (a ratio of means over identities)

``clean`` is the cell (protection ``none``, red-team ``none``); ``M(P)`` is protection ``P`` without a
red-team. The recovery is a ratio of means, not a mean of per-identity ratios, which explode where one
identity's gap is near 0; its interval resamples identities jointly for numerator and denominator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

PURIFIER_NAMES = {"none": "", "jpeg": "JPEG", "gridpure": "GrIDPure", "codesr": "CodeSR", "codesr-mini": "CodeSR",
                  "diffpure": "DiffPure"}


def team_name(purification: str, cdl: bool, qes: bool) -> str:
    """A red-team's name from its parts: ``"CodeSR + CDL + QES"``, ``"JPEG"``, ``"none"`` (no red-team)."""
    parts = [PURIFIER_NAMES.get(purification, purification), "CDL" if cdl else "", "QES" if qes else ""]
    return " + ".join(p for p in parts if p) or "none"


Cells = dict[tuple[str, str], dict[str, dict[str, float]]]  # (protection, team) -> metric -> identity -> mean


def per_identity(rows: Iterable[Mapping[str, Any]], team: Callable[[Mapping[str, Any]], str | None]) -> Cells:
    """Mean of each metric per (protection, red-team) cell and identity, over seeds; rows without a value and
    rows ``team`` maps to None are left out."""
    acc: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        name = team(row)
        if name is None or row["value"] is None:
            continue
        acc[(row["protection"], name)][row["metric"]][row["identity"]].append(float(row["value"]))
    return {cell: {m: {i: float(np.mean(v)) for i, v in ids.items()} for m, ids in ms.items()} for cell, ms in acc.items()}


def bootstrap(stat: Callable[[np.ndarray], float], n_units: int, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(indices)`` over ``resamples`` draws of ``n_units`` units with replacement."""
    rng = np.random.default_rng(seed)
    draws = [stat(rng.integers(0, n_units, n_units)) for _ in range(resamples)]
    draws = [d for d in draws if np.isfinite(d)]
    if not draws:
        return float("nan"), float("nan")
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _aligned(*series: Mapping[str, float]) -> tuple[list[str], list[np.ndarray]]:
    ids = sorted(set.intersection(*(set(s) for s in series)))
    return ids, [np.array([s[i] for i in ids]) for s in series]


def difference(cells: Cells, metric: str, a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any] | None:
    """``M(a) - M(b)`` of two cells per identity, its mean, 95 % bootstrap interval over identities and how many
    identities agree in sign with the mean; None when either cell is missing."""
    x, y = cells.get(a, {}).get(metric), cells.get(b, {}).get(metric)
    if not x or not y:
        return None
    ids, (u, v) = _aligned(x, y)
    if not ids:
        return None
    d = u - v
    mean = float(d.mean())
    lo, hi = bootstrap(lambda i: float(d[i].mean()), len(d))
    same = int(((np.sign(d) == np.sign(mean)) & (d != 0)).sum())  # a mean of exactly 0 has no sign: 0 agree
    return {"mean": mean, "ci": [lo, hi], "same_sign": same, "n": len(d),
            "per_identity": dict(zip(ids, d.round(4).tolist()))}


def gap(cells: Cells, metric: str, protection: str) -> dict[str, Any] | None:
    """The protection's gap ``M(clean) - M(protection)`` (:func:`difference`)."""
    return difference(cells, metric, ("none", "none"), (protection, "none"))


def recovery(cells: Cells, metric: str, protection: str, team: str) -> dict[str, Any] | None:
    """Share of the protection's gap that ``team`` recovers (ratio of means over identities) with its 95 %
    interval; None when a cell is missing."""
    series = [cells.get(k, {}).get(metric) for k in (("none", "none"), (protection, "none"), (protection, team))]
    if not all(series):
        return None
    ids, (c, p, r) = _aligned(*series)
    if not ids:
        return None
    num, den = r - p, c - p

    def ratio(i: np.ndarray) -> float:
        g = den[i].mean()
        return float(num[i].mean() / g) if abs(g) > 1e-12 else float("nan")

    lo, hi = bootstrap(ratio, len(ids))
    return {"mean": ratio(np.arange(len(ids))), "ci": [lo, hi], "n": len(ids), "gain": float(num.mean()),
            "per_identity_gain": dict(zip(ids, num.round(4).tolist()))}


def paired(cells: Cells, metric: str, protection: str, team: str, baseline: str) -> dict[str, Any] | None:
    """``M(protection, team) - M(protection, baseline)`` (:func:`difference`): the paper's Table 4 ablations, a
    module's effect with the rest fixed, e.g. CodeSR + CDL + QES - CodeSR."""
    return difference(cells, metric, (protection, team), (protection, baseline))


# The paper's Table 4 (docs/PAPER.md): each module's paired effect, (team, baseline) on the same protection.
# ("CDL", "CodeSR") compares the two single modules directly (the paper: CDL is the strongest).
ABLATIONS = (("CodeSR + CDL + QES", "CodeSR"), ("CDL", "none"), ("CDL + QES", "none"), ("CodeSR + CDL", "CodeSR"),
             ("CodeSR", "none"), ("CDL", "CodeSR"), ("CodeSR + CDL + QES", "CodeSR + CDL"))

# A recovered share is shown only when its 95 % interval is narrower than this (in units of the gap): narrower
# than 0.5 tells a red team that recovers nothing from one that recovers half (#31 item 6); wider, the
# terminal and the report say "not measured at this size" instead of a number.
RESOLVED_WIDTH = 0.5


MIN_UNITS = 2  # a bootstrap over one identity has an interval of width 0: it measures nothing


def resolved(effect: Mapping[str, Any] | None, width: float = RESOLVED_WIDTH) -> bool:
    """Whether ``effect`` (a :func:`recovery`, :func:`gap` or :func:`paired` result) has a finite 95 % interval
    narrower than ``width``, over at least :data:`MIN_UNITS` identities."""
    if not effect or effect.get("n", MIN_UNITS) < MIN_UNITS:
        return False
    lo, hi = effect["ci"]
    return bool(np.isfinite(lo) and np.isfinite(hi) and hi - lo < width)
