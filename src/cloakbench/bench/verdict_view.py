"""The verdict on a terminal (:func:`tables`): one line per protection, a table of gaps, a table of red teams.

Made for 80 columns and wider: no cell ever wraps (an interval is never split across lines); a table that
would not fit drops its last metric columns and says so in its caption (every figure is in
``verdict.json`` and report.html). Cells are :class:`rich.text.Text`, so brackets in intervals and metric
names (``ism[mini]``) print as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SHORT = {"verified": "verified", "ism": "ISM", "fdfr": "FDFR", "clip_iqac": "IQA", "ims": "IMS", "brisque": "BRISQUE",
         "liqe": "LIQE", "q": "Q", "avg": "AVG", "clip_style": "style", "copy": "copy", "prior": "prior"}
UNRESOLVED = "not measured"  # a recovered share whose interval cannot tell 0 % from 50 % (effects.resolved)


def short(metric: str) -> str:
    """``ism[dlib]`` -> ``ISM``: a column header (the full names are in the caption)."""
    return SHORT.get(metric.split("[")[0], metric)


def interval(d: Mapping[str, Any] | None, *, sign: bool = True) -> str:
    """``+0.39 [+0.16, +0.58] 6/8`` (mean, 95 % interval, identities with the mean's sign)."""
    if not d:
        return "-"
    f = lambda x: f"{round(x, 2) + 0.0:+.2f}"  # noqa: E731  (never "-0.00")
    text = f"{f(d['mean'])} [{f(d['ci'][0])}, {f(d['ci'][1])}]"
    return text + (f" {d['same_sign']}/{d['n']}" if sign and "same_sign" in d else "")


def share(d: Mapping[str, Any] | None, state: str | None = None) -> str:
    """``86% [69, 126]``, or :data:`UNRESOLVED` when its interval is too wide to tell 0 % from 50 % (narrower than
    ``effects.RESOLVED_WIDTH``, or wholly on one side of 50 %: ``state`` ``breaks`` / ``holds``)."""
    if not d:
        return "-"
    if not d.get("resolved", True) and state not in ("breaks", "holds"):
        return UNRESOLVED
    lo, hi = d["ci"]
    if lo != lo:  # NaN: no finite draw
        return UNRESOLVED
    return f"{100 * d['mean']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def budget(b: Mapping[str, Any] | None) -> str:
    """Measured L-inf of the saved PNGs, ``16/255`` (one decimal when not whole)."""
    if not b:
        return "-"
    v = b["linf_255"]
    return f"{v:.0f}/255" if abs(v - round(v)) < 0.05 else f"{v:.1f}/255"


def _fit(columns: Sequence[tuple[str, str]], rows: list[list[str]], width: int, keep: int) -> int:
    """How many columns fit ``width`` with no cell wrapped (a rich box: 3 characters per column, plus 1);
    never fewer than ``keep``."""
    n = len(columns)
    while n > keep:
        w = sum(max([len(h)] + [len(r[i]) for r in rows]) for i, (h, _) in enumerate(columns[:n])) + 3 * n + 1
        if w <= width:
            break
        n -= 1
    return n


def _table(title: str, caption: str, columns: Sequence[tuple[str, str]], rows: list[list[str]], width: int,
           keep: int, dropped: str):
    from rich.table import Table
    from rich.text import Text

    n = _fit(columns, rows, width, keep)
    if n < len(columns):
        caption += f" {dropped}: " + ", ".join(h for h, _ in columns[n:]) + " (in verdict.json and report.html)"
    t = Table(title=Text(title), caption=Text(caption))
    for head, justify in columns[:n]:
        t.add_column(Text(head), justify=justify, no_wrap=True)
    for r in rows:
        t.add_row(*(Text(c) for c in r[:n]))
    return t


def lines(verdict: Mapping[str, Any]) -> list[str]:
    """The verdict in words, one or two lines per protection, each under 80 columns."""
    out = []
    many = len(verdict["victims"]) > 1
    for v in verdict["victims"]:
        for p in v["protections"]:
            head = f"{p['protection']}" + (f" on {v['victim']}" if many else "")
            if p["budget"]:
                head += f" (measured L-inf {budget(p['budget'])})"
            out.append(f"{head}:")
            out += [f"  {part}" for part in p["line"].split("; ")]
    return out


def _columns(verdict: Mapping[str, Any]) -> list[str]:
    """The metrics shown, most telling first: the headline, then the first quality metric (the paper reports
    identity and quality), then the others; a metric whose every gap is exactly 0 (FDFR on the mini stack) is
    left out (it is in verdict.json)."""
    from ..metrics import METRICS

    scored = [m for m, d in verdict["metrics"].items() if d is not None]
    gaps = [p["gap"] for v in verdict["victims"] for p in v["protections"]]

    def flat(m: str) -> bool:
        return bool(gaps) and all(not (g := gap.get(m)) or (g["mean"] == 0 and g["ci"] == [0, 0]) for gap in gaps)

    keep = [m for m in scored if not flat(m) or m == verdict["headline"]]

    def quality(m: str) -> bool:
        base = m.split("[")[0]
        return base in METRICS and not METRICS.get(base).factory.needs_face and not METRICS.get(base).factory.needs_reference

    head = [m for m in keep if m == verdict["headline"]]
    first_quality = [m for m in keep if m not in head and quality(m)][:1]
    return head + first_quality + [m for m in keep if m not in head and m not in first_quality]


def tables(verdict: Mapping[str, Any], width: int = 80) -> list:
    """Rich renderables: the verdict lines, the gap table and the red-team table of each victim."""
    from rich.text import Text

    n = len(verdict["identities"])
    scored = _columns(verdict)
    if not scored:
        return [Text("no metric with a direction: nothing to judge")]
    names = ", ".join(f"{short(m)} = {m}" for m in scored)
    size = f"{n} identities x {verdict['seeds']} seed(s) x {verdict['samples']} samples"
    out: list = [Text(f"Verdict on {verdict['headline']} ({size}); a red team breaks a protection when it "
                      f"recovers at least {100 * verdict['breaks_at']:.0f}% of its gap (whole 95% interval)",
                      style="bold")]
    out += [Text(line) for line in lines(verdict)]
    for v in verdict["victims"]:
        where = f" ({v['victim']})" if len(verdict["victims"]) > 1 else ""
        cols = [("protection", "left"), ("L-inf", "right"), *((short(m), "right") for m in scored)]
        rows = [[p["protection"], budget(p["budget"]), *(interval(p["gap"].get(m)) for m in scored)]
                for p in v["protections"]]
        if rows:
            out.append(_table(f"protection gap{where}: clean - protected, signed so > 0 means it protects",
                              f"mean [95% CI over {n}] and identities with the mean's sign; L-inf: measured on the "
                              f"saved PNGs. {names}.", cols, rows, width, 3, "not shown at this width"))
        cols = [("protection", "left"), ("red team", "left"), ("state", "left"), (short(verdict["headline"]), "right"),
                *((short(m), "right") for m in scored if m != verdict["headline"])]
        rows = []
        for p in v["protections"]:
            for i, t in enumerate(p["teams"]):
                label = t["red_team"] + (" *" if t["red_team"] == p["strongest"] else "")
                rows.append([p["protection"] if i == 0 else "", label, t["state"],
                             share(t["recovered"].get(verdict["headline"]), t["state"]),
                             *(share(t["recovered"].get(m)) for m in scored if m != verdict["headline"])])
        if rows:
            out.append(_table(f"share of the gap each red team recovers{where}",
                              f"mean[red - protected] / mean[clean - protected], 95% CI over {n}; * strongest; "
                              f"{UNRESOLVED}: the interval is too wide to tell 0% from 50% at this size.",
                              cols, rows, width, 4, "not shown at this width"))
    return out
