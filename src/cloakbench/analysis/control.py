"""M3, the random-noise control (arXiv 2406.18944; docs/PAPER.md §2 prediction 2 and §3 M3).

The paper's claim: random noise of the protection's L-inf size "does not affect learning"; only the
protection's structure makes the identifier learn a shortcut. The measurement is a bench grid: the
same training images under ``none`` (clean), the protection, and ``random-noise`` at the same budget
(:mod:`cloakbench.protect.random_noise`), each through the same fine-tune, sampling and metrics, e.g.::

    protections:
      - {method: none}
      - {method: aspl, eps: 8/255}
      - {method: random-noise, eps: 8/255}   # same budget; measured on the saved PNGs

:func:`random_noise_control` reads the finished run folder (``results.sqlite`` and the protect stages'
``protection.json``) and tabulates, for each recipe and QES setting without a red-team (purification
``none``): every metric's mean over identities (seeds averaged within an identity) for clean, each
protection and each random-noise entry, the gap ``M(clean) - M(x)`` with its 95 % bootstrap interval
over identities (:func:`cloakbench.bench.effects.gap`), and each entry's measured L-inf (k/255).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

RANDOM = "random-noise"


def _method(label: str) -> str:
    return label.split("@")[0]


def measured_linf(run_dir: str | Path) -> dict[tuple[str, float | None], float]:
    """Largest measured L-inf (k/255, on the saved PNGs) per (method, nominal eps) over the run's protect stages."""
    out: dict[tuple[str, float | None], float] = {}
    for done in sorted(Path(run_dir, "artifacts").glob("protect-*/DONE.json")):
        spec = json.loads(done.read_text())["spec"]
        record = done.parent / "protection.json"
        if not record.is_file():
            continue
        linf = float(json.loads(record.read_text())["measured"]["linf_max_255"])
        key = (spec["params"]["method"], spec["params"]["eps"])
        out[key] = max(out.get(key, 0.0), linf)
    return out


def _linf_of(label: str, linf: dict[tuple[str, float | None], float]) -> float | None:
    """The measured L-inf of a row label (``method@eps`` as the grid wrote it)."""
    from ..images import parse_budget

    method, _, eps = label.partition("@")
    nominal = parse_budget(eps) if eps else None
    hits = [v for (m, e), v in linf.items()
            if m == method and (e is None if nominal is None else e is not None and abs(e - nominal) < 1e-9)]
    return max(hits) if hits else None


def random_noise_control(run_dir: str | Path, *, recipes: Sequence[str] | None = None,
                         out: str | Path | None = None) -> dict[str, Any]:
    """The M3 table of a finished bench run folder; with ``out`` also written there as JSON.

    Returns ``{"run", "labels": {"clean", "protections", "random"}, "linf_255": {label: k}, "warnings",
    "tables": [{"recipe", "qes", "rows": {label: {metric: mean}}, "gaps": {label: {metric: gap}}}]}``
    (labels: ``none`` for clean, ``method@eps`` otherwise; gaps as :func:`cloakbench.bench.effects.gap`).
    Raises :class:`~cloakbench.errors.InputError` when the grid lacks the clean cell or a random-noise entry.
    """
    from ..bench.effects import gap, per_identity
    from ..bench.store import read_rows

    run = Path(run_dir)
    db = run / "results.sqlite"
    if not db.is_file():
        raise FileNotFoundError(f"{db} does not exist: run `cloakbench bench` first")
    rows = [r for r in read_rows(db) if r["purification"] == "none" and (recipes is None or r["recipe"] in recipes)]
    labels = sorted({r["protection"] for r in rows})
    randoms = [x for x in labels if _method(x) == RANDOM]
    prots = [x for x in labels if x != "none" and x not in randoms]
    if "none" not in labels or not randoms:
        raise InputError(f"{run}: M3 needs the clean cell (protection `none`) and a `{RANDOM}` entry without a red-team; "
                         f"found protections {labels or 'none at all'}")
    linf_by_key = measured_linf(run)
    linf = {x: _linf_of(x, linf_by_key) for x in prots + randoms}
    warnings = [f"{p}: measured L-inf {linf[p]:g}/255 but no random-noise entry measures the same "
                f"({', '.join(f'{r} {linf[r]:g}' for r in randoms)})"
                for p in prots if linf[p] is not None and all(linf[r] != linf[p] for r in randoms)]
    tables = []
    for recipe, qes in sorted({(r["recipe"], r["qes"]) for r in rows}):
        cells = per_identity([r for r in rows if (r["recipe"], r["qes"]) == (recipe, qes)], lambda r: "none")
        metrics = sorted({m for ms in cells.values() for m in ms})
        table: dict[str, Any] = {"recipe": recipe, "qes": qes, "rows": {}, "gaps": {}}
        for label in ["none", *prots, *randoms]:
            ms = cells.get((label, "none"), {})
            table["rows"][label] = {m: float(np.mean(list(ms[m].values()))) for m in metrics if m in ms}
            if label != "none":
                table["gaps"][label] = {m: gap(cells, m, label) for m in metrics}
        tables.append(table)
    summary = {"run": str(run), "labels": {"clean": "none", "protections": prots, "random": randoms},
               "linf_255": linf, "warnings": warnings, "tables": tables}
    if out is not None:
        from ..stages.output import write_record

        write_record(Path(out), "m3.json", summary)
    return summary
