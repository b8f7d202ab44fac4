"""The verdict as a picture (report.html): per protection, its gap and each red team's recovered share on the
headline metric, as bars with their 95 % intervals, drawn from the verdict's numbers (never from table text)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot(verdict: Mapping[str, Any], folder: Path) -> str | None:
    """``folder/verdict.png``: left, each protection's gap (headline metric, clean - protected, > 0 protects);
    right, each red team's recovered share with a line at the breaking share. Returns the file name, or None
    without matplotlib or without a protection."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = verdict["headline"]
    prots = [(v["victim"], p) for v in verdict["victims"] for p in v["protections"] if p["gap"].get(m)]
    if not prots:
        return None
    many = len(verdict["victims"]) > 1
    names = [p["protection"] + (f" ({victim})" if many else "") for victim, p in prots]
    teams = [(name, t) for name, (_, p) in zip(names, prots) for t in p["teams"] if t["recovered"].get(m)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.35 * max(len(prots), len(teams)) + 1.6), dpi=100,
                               gridspec_kw={"width_ratios": [1, 1.6]})
    for ax, items, title in ((a, [(n, p["gap"][m]) for n, (_, p) in zip(names, prots)], f"gap on {m}"),
                             (b, [(f"{n}: {t['red_team']}", t["recovered"][m]) for n, t in teams],
                              "share of the gap recovered")):
        ys = list(range(len(items)))[::-1]
        share = ax is b
        scale = 100 if share else 1
        vals = [scale * d["mean"] for _, d in items]
        err = [[scale * (d["mean"] - d["ci"][0]) for _, d in items], [scale * (d["ci"][1] - d["mean"]) for _, d in items]]
        colors = ["#4c72b0" if not share else ("#c44e52" if t["state"] == "breaks" else "#55a868"
                  if t["state"] == "holds" else "#999999") for t in ([t for _, t in teams] if share else items)]
        ax.barh(ys, vals, xerr=err, color=colors, capsize=3)
        ax.set_yticks(ys, [n for n, _ in items], fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        if share:
            ax.axvline(100 * verdict["breaks_at"], color="#c44e52", ls="--", lw=0.8)
            ax.set_xlabel("% of the gap (red: breaks, green: holds, grey: unresolved)", fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "verdict.png")
    plt.close(fig)
    return "verdict.png"
