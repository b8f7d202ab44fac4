"""Per-subject figures of a mini grid: how much one demo cell varies between held-out subjects.

The demo averages one subject; before trusting a gap, run the same config on several subjects
(``data.world.subjects``) with ``cloakbench bench CONFIG --out RUN`` and read each cell per subject
here: metric per (protection, red-team) for every identity, their mean, and the clean-minus-protected
gap per identity (no red-team). Figures: benchmarks/README.md, "Mini demo".

    python benchmarks/mini_spread.py RUN CONFIG [--metrics ism clip_iqac fdfr]
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

from cloakbench.bench import load_config
from cloakbench.bench.store import read_rows
from cloakbench.minilab.demo import RED_TEAMS


def per_subject(run: Path, config: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """(identity, protection, red-team) -> {metric name without backend: value}."""
    cdl = {r.name: r.cdl for r in load_config(config).recipes}
    values: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for r in read_rows(run / "results.sqlite"):
        team = RED_TEAMS.get((r["purification"], cdl.get(r["recipe"], False)))
        if team and r["value"] is not None:
            values[(r["identity"], r["protection"], team)][r["metric"].split("[")[0]] = float(r["value"])
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("config", type=Path)
    ap.add_argument("--metrics", nargs="+", default=["ism", "clip_iqac", "fdfr"])
    args = ap.parse_args()
    v = per_subject(args.run, args.config)
    ids = sorted({k[0] for k in v})
    order = list(RED_TEAMS.values())
    cells = sorted({k[1:] for k in v}, key=lambda k: (k[0] != "none", k[0], order.index(k[1])))
    fmt = lambda x: "      -" if x is None or math.isnan(x) else f"{x:7.3f}"  # noqa: E731
    for m in args.metrics:
        print(f"\n{m}: {' '.join(f'{i:>7s}' for i in ids)} |    mean")
        for prot, team in cells:
            vals = [v[(i, prot, team)].get(m) for i in ids]
            ok = [x for x in vals if x is not None]
            print(f"{prot:6s} {team:14s} " + " ".join(fmt(x) for x in vals) + f" | {fmt(sum(ok) / len(ok) if ok else None)}")
        for prot in sorted({c[0] for c in cells} - {"none"}):
            gaps = [v[(i, "none", "none")].get(m, math.nan) - v[(i, prot, "none")].get(m, math.nan) for i in ids]
            print(f"gap clean - {prot}, per subject: " + " ".join(fmt(g) for g in gaps))


if __name__ == "__main__":
    main()
