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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

RANDOM = "random-noise"


def _method(label: str) -> str:
    return label.split("@")[0]


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
    from ..bench.verdict import measured_budgets

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
    measured = measured_budgets(run)  # each cell's own protect stages (bench/verdict.py: one place)
    linf = {x: measured[x]["linf_255"] if x in measured else None for x in prots + randoms}
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
