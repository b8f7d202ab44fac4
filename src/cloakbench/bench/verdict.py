"""The verdict of a run: does each protection hold, and against which red team?

For every protection of a finished (or partly finished) run folder, read from the folder alone
(``results.sqlite`` and the stages' ``DONE.json`` / ``protection.json``, so ``cloakbench report`` needs no
config):

- its **measured budget**: the largest L-inf (k/255) and the mean L2 (in 255ths) of its saved 8-bit PNGs
  over the cells that trained on it (``protection.json``, written by the protect stage);
- its **gap** on each metric with a direction: ``s * (M(clean) - M(protected))`` per identity, where ``s`` is
  +1 when higher is better (ISM, verified) and -1 when lower is (FDFR, BRISQUE), so a positive gap always
  means the protection worked; mean, 95 % bootstrap interval over identities, identities with its sign
  (:mod:`cloakbench.bench.effects`);
- each **red team's recovered share** ``mean[M(P, R) - M(P)] / mean[M(clean) - M(P)]`` with its interval
  (the sign cancels), and the paired differences of the paper's Table 4 (``team - baseline``, raw);
- the **strongest red team** (the worst case for the protection, as AutoAttack reports the strongest of its
  attacks): the one with the largest recovered share on the headline metric, with what is left of the gap
  under it (``residual``, ``M(clean) - M(P, strongest)``, signed as the gap).

The headline metric is the first metric of the grid's ``metrics`` with a direction. A red team's state:
``breaks`` when the whole interval of its recovered share is at or above :data:`BREAKS_AT` (it restores at
least half of what the protection took), ``holds`` when the whole interval is below it, ``unresolved``
otherwise (this many identities cannot tell, or fewer than two identities: an interval over one is of width 0). A
protection whose gap interval reaches 0 has ``no measured effect``; its red teams' state is ``no gap``. The verdict line: ``holds against N of M red teams; strongest: X
recovers Y % [lo, hi]``.

A *red team* is a purifier, CDL, QES or a combination (:func:`~cloakbench.bench.effects.team_name`); a
*victim* is the fine-tune the mimic runs (a recipe's training settings without the red-team parts: CDL and
its prior settings). Cells of one victim are compared with that victim's clean cell only; a grid with
LoRA and DreamBooth recipes gets a verdict per victim.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .effects import ABLATIONS, MIN_UNITS, difference, paired, per_identity, recovery, resolved, team_name

BREAKS_AT = 0.5  # a red team breaks a protection when it recovers at least half of its gap (the claims' rule)
ORDER = ["none", "JPEG", "GrIDPure", "CodeSR", "CDL", "CDL + QES", "CodeSR + CDL", "CodeSR + CDL + QES"]
# recipe keys that belong to the red team (CDL and the prior it needs), not to the victim's fine-tune
_RED_TEAM_KEYS = ("name", "cdl", "purifications", "protections", "qes", "prior", "num_class_images", "class_steps")
VERDICT = "verdict.json"


def _stages(runs: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Every finished stage of the run folders: its full hash -> DONE.json (with ``_dir``)."""
    out = {}
    for run in runs:
        for p in sorted((run / "artifacts").glob("*/DONE.json")):
            try:
                done = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{p} is corrupt ({exc}): delete that stage folder and rerun the grid to redo "
                                 "it") from None
            out[done.get("hash", p.parent.name)] = done | {"_dir": p.parent}
    return out


def _find(stages: Mapping[str, dict], ref: str) -> dict | None:
    """The stage a spec input names (full hash, or a 16-character prefix as folder names hold)."""
    if ref in stages:
        return stages[ref]
    return next((d for h, d in stages.items() if h.startswith(ref[:16])), None) if len(ref) >= 16 else None


def _upstream(stages: Mapping[str, dict], done: dict, kind: str) -> dict | None:
    """Walk an evaluate stage's inputs back to its first stage of ``kind`` (train, protect, ...)."""
    seen = 0
    todo = [done]
    while todo and seen < 32:
        d = todo.pop()
        seen += 1
        if d["spec"]["kind"] == kind:
            return d
        for key in ("images", "model", "instances"):
            ref = d["spec"].get("inputs", {}).get(key)
            if isinstance(ref, str) and not ref.startswith("files:") and (up := _find(stages, ref)) is not None:
                todo.append(up)
    return None


def victim_key(recipe: Mapping[str, Any]) -> str:
    """The victim's fine-tune of a recipe (its train spec's ``recipe``): the settings without the red-team keys."""
    return json.dumps({k: v for k, v in recipe.items() if k not in _RED_TEAM_KEYS}, sort_keys=True)


def recipes(stages: Mapping[str, dict]) -> dict[str, dict[str, Any]]:
    """Recipe name -> ``{"cdl", "victim"}`` from the run's train stages; victims named by their plain recipe
    (the shortest name among the recipes of that victim without CDL; a CDL recipe's own name if none)."""
    found: dict[str, dict[str, Any]] = {}
    for d in stages.values():
        if d["spec"]["kind"] == "train" and isinstance(rec := d["spec"].get("params", {}).get("recipe"), dict):
            found[rec["name"]] = {"cdl": bool(rec.get("cdl")), "key": victim_key(rec)}
    names: dict[str, str] = {}
    for name, r in sorted(found.items(), key=lambda kv: (kv[1]["cdl"], len(kv[0]), kv[0])):
        names.setdefault(r["key"], name)
    return {name: {"cdl": r["cdl"], "victim": names[r["key"]]} for name, r in found.items()}


def budgets(stages: Mapping[str, dict], rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Protection label -> measured budget of the images its cells trained on: ``linf_255`` (largest L-inf,
    k/255), ``l2_255`` (mean L2 over images, 255ths) and ``nominal`` (the budget as typed, ``"8/255"``), from the
    protect stages'
    ``protection.json`` (measured on the saved 8-bit PNGs)."""
    acc: dict[str, dict[str, list[float]]] = {}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        ev = _find(stages, row["spec_hash"]) if row.get("spec_hash") else None
        prot = _upstream(stages, ev, "protect") if ev else None
        if prot is None or (row["protection"], prot["hash"] if "hash" in prot else str(prot["_dir"])) in seen:
            continue
        seen.add((row["protection"], prot.get("hash", str(prot["_dir"]))))
        record = prot["_dir"] / "protection.json"
        if not record.is_file():
            continue
        m = json.loads(record.read_text())
        a = acc.setdefault(row["protection"], {"linf": [], "l2": [], "nominal": []})
        a["linf"].append(float(m["measured"]["linf_max_255"]))
        a["l2"].append(float(m["measured"]["l2_mean_255"]))
        if m.get("eps_nominal_255") is not None:
            a["nominal"].append(str(m["eps_nominal_255"]))
    return {label: {"linf_255": max(a["linf"]), "l2_255": float(np.mean(a["l2"])),
                    "nominal": a["nominal"][0] if a["nominal"] else None} for label, a in acc.items()}


def measured_budgets(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """:func:`budgets` of one run folder, every cell of its results table."""
    from .store import read_rows

    run = Path(run_dir)
    return budgets(_stages([run]), read_rows(run / "results.sqlite"))


def direction(metric: str, recorded: Mapping[str, bool | None] | None = None) -> bool | None:
    """Whether higher is better for ``metric`` (``ism[dlib]`` -> ISM's): as the run's evaluate stages recorded it
    (``recorded``, from their DONE.json: a plugin metric's too), else the registered class's ``higher_better``;
    None when it has no direction or is not a metric (the class-image shares of :mod:`cloakbench.bench.prior`)."""
    from ..metrics import METRICS

    if recorded and metric in recorded:
        return recorded[metric]
    base = metric.split("[")[0]
    return getattr(METRICS.get(base).factory, "higher_better", None) if base in METRICS else None


def _recorded_directions(stages: Mapping[str, dict]) -> dict[str, bool | None]:
    """Metric -> direction as the evaluate stages of the run recorded it (folders from before have none)."""
    out: dict[str, bool | None] = {}
    for d in stages.values():
        if d["spec"]["kind"] == "evaluate":
            out.update(d.get("outputs", {}).get("higher_better", {}))
    return out


def _rank(team: str) -> tuple:
    return (ORDER.index(team) if team in ORDER else len(ORDER), team)


def _state(share: Mapping[str, Any] | None) -> str:
    if not share or not np.isfinite(share["ci"][0]) or share["n"] < MIN_UNITS:
        return "unresolved"
    lo, hi = share["ci"]
    return "breaks" if lo >= BREAKS_AT else "holds" if hi < BREAKS_AT else "unresolved"


def _signed(d: dict[str, Any] | None, sign: int) -> dict[str, Any] | None:
    if d is None or sign == 1:
        return d
    lo, hi = d["ci"]
    return {**d, "mean": -d["mean"], "ci": [-hi, -lo], "per_identity": {k: -v for k, v in d["per_identity"].items()}}


def compute(run_dir: str | Path | Sequence, *, recipes_of: Iterable[str] | None = None,
            extra_rows: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The verdict of one run folder (or several holding parts of one grid, e.g. a seed each).

    ``recipes_of``: only rows of these recipes (a folder that holds several grids); ``extra_rows``: more rows
    in the results table's shape (e.g. :func:`cloakbench.bench.prior.class_image_rows`), shown as cell means.
    Returns ``{"headline", "metrics": {metric: higher_better}, "identities", "seeds", "samples", "victims":
    [{"victim", "rows": [cell means], "protections": [...], "ablations": [...]}]}``; each protection entry
    holds ``budget``, ``gap`` (per metric), ``teams`` (``red_team``, ``recovered`` per metric, ``state``),
    ``strongest``, ``residual``, ``holds`` / ``of`` and the verdict ``line``."""
    from .store import read_rows

    runs = [Path(r) for r in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    stages = _stages(runs)
    rows = [r for run in runs if (run / "results.sqlite").is_file() for r in read_rows(run / "results.sqlite")]
    rows += list(extra_rows)
    allowed = set(recipes_of) if recipes_of is not None else None
    rows = [r for r in rows if allowed is None or r["recipe"] in allowed]
    recs = recipes(stages)
    for name in {r["recipe"] for r in rows} - set(recs):  # rows whose training left no record: a victim of their own
        recs[name] = {"cdl": False, "victim": name}
    order = next((d["spec"].get("params", {}).get("metrics") for d in stages.values()
                  if d["spec"]["kind"] == "evaluate" and d["spec"].get("params", {}).get("metrics")), [])
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: (order.index(m) if m in order else len(order), m))
    recorded = _recorded_directions(stages)
    dirs = {m: direction(m, recorded) for m in metrics}
    headline = next((m for m in metrics if dirs[m] is not None), None)
    budget = budgets(stages, rows)
    victims = []
    for victim in sorted({r["victim"] for r in recs.values()}):
        def team(row: Mapping[str, Any], victim: str = victim) -> str | None:
            r = recs.get(row["recipe"])
            return team_name(row["purification"], r["cdl"], bool(row["qes"])) if r and r["victim"] == victim else None

        cells = per_identity(rows, team)
        if cells:
            victims.append({"victim": victim, **_victim(cells, metrics, dirs, headline, budget)})
    identities = sorted({i for r in rows if r.get("identity") for i in [r["identity"]]})
    seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
    samples = next((d["spec"].get("params", {}).get("n") for d in stages.values() if d["spec"]["kind"] == "sample"), None)
    return {"headline": headline, "metrics": dirs, "identities": identities, "seeds": len(seeds), "samples": samples,
            "breaks_at": BREAKS_AT, "victims": victims}


def _victim(cells, metrics: list[str], dirs: dict[str, bool | None], headline: str | None,
            budget: Mapping[str, dict]) -> dict[str, Any]:
    rank = lambda cell: (cell[0] != "none", cell[0], *_rank(cell[1]))  # noqa: E731
    means = [{"protection": p, "red_team": t, **{m: float(np.mean(list(v.values()))) for m, v in cells[(p, t)].items()}}
             for p, t in sorted(cells, key=rank)]
    scored = [m for m in metrics if dirs[m] is not None]
    protections = []
    for prot in sorted({p for p, _ in cells} - {"none"}):
        gaps = {m: _signed(difference(cells, m, ("none", "none"), (prot, "none")), 1 if dirs[m] else -1) for m in scored}
        teams = []
        effect = bool(gaps.get(headline)) and gaps[headline]["ci"][0] > 0 and gaps[headline]["n"] >= MIN_UNITS
        for t in sorted((t for p, t in cells if p == prot and t != "none"), key=_rank):
            shares = {m: recovery(cells, m, prot, t) for m in scored}
            for s in shares.values():
                if s:
                    s["resolved"] = resolved(s)
            # without a measured gap there is nothing to break or hold: a share of a gap near 0 means nothing
            teams.append({"red_team": t, "recovered": shares, "state": _state(shares.get(headline)) if effect else "no gap"})
        entry = {"protection": prot, "budget": budget.get(prot), "gap": gaps, "teams": teams}
        protections.append(entry | _worst(cells, prot, teams, gaps.get(headline), headline, dirs))
    ablations = [{"protection": prot, "team": team, "baseline": base,
                  **{m: paired(cells, m, prot, team, base) for m in scored}}
                 for prot in sorted({p for p, _ in cells} - {"none"}) for team, base in ABLATIONS
                 if (prot, team) in cells and (prot, base) in cells]
    return {"rows": means, "protections": protections, "ablations": ablations}


def _worst(cells, prot: str, teams: list[dict], gap: dict | None, headline: str | None,
           dirs: Mapping[str, bool | None]) -> dict[str, Any]:
    """The strongest red team on the headline metric, what is left of the gap under it, and the verdict line."""
    measured = [t for t in teams if (r := t["recovered"].get(headline)) and np.isfinite(r["mean"]) and r["n"] >= MIN_UNITS]
    effect = bool(gap) and gap["ci"][0] > 0 and gap["n"] >= MIN_UNITS
    strongest = max(measured, key=lambda t: t["recovered"][headline]["mean"], default=None)
    residual = None
    if strongest is not None:
        sign = 1 if dirs.get(headline) else -1
        residual = _signed(difference(cells, headline, ("none", "none"), (prot, strongest["red_team"])), sign)
    holds, breaks = (sum(t["state"] == k for t in teams) for k in ("holds", "breaks"))
    unresolved = len(teams) - holds - breaks
    if not gap:
        line = "no clean cell to compare with"
    elif gap["n"] < MIN_UNITS:
        line = f"not measured: {gap['n']} identity (an interval needs {MIN_UNITS} or more)"
    elif not effect:
        line = f"no measured effect: gap {_ci(gap)} reaches 0"
    elif strongest is None:
        line = "no red team measured on two or more identities" if teams else "no red team ran"
    else:
        s = strongest["recovered"][headline]
        # a share is printed only when its interval can tell 0 % from 50 % (narrow, or wholly on one side)
        told = s.get("resolved") or strongest["state"] in ("breaks", "holds")
        line = (f"holds against {holds} of {len(teams)} red teams" + (f", broken by {breaks}" if breaks else "")
                + (f", {unresolved} unresolved" if unresolved else "")
                + f"; strongest: {strongest['red_team']} "
                + (f"recovers {_share(s)}" if told else "(its share is not measured at this size)"))
    return {"strongest": strongest["red_team"] if strongest else None, "residual": residual, "holds": holds,
            "of": len(teams), "effect": effect, "line": line}


def _ci(d: Mapping[str, Any]) -> str:
    return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _share(d: Mapping[str, Any]) -> str:
    return f"{100 * d['mean']:.0f} % [{100 * d['ci'][0]:.0f}, {100 * d['ci'][1]:.0f}]"


def write(run_dir: str | Path, verdict: Mapping[str, Any]) -> Path:
    """``run_dir/verdict.json`` (atomic) and a ``verdict`` table in ``results.sqlite`` (one row per victim x
    protection x red team x metric: kind ``gap`` / ``recovered`` / ``residual``, mean, interval, state)."""
    from ..images import atomic_write_bytes

    run = Path(run_dir)
    path = run / VERDICT
    atomic_write_bytes(path, json.dumps(verdict, indent=2, default=str).encode())
    rows = []
    for v in verdict["victims"]:
        for p in v["protections"]:
            for m, g in p["gap"].items():
                if g:
                    rows.append((v["victim"], p["protection"], "none", m, "gap", g["mean"], *g["ci"], g["n"], None))
            if p["residual"]:
                r = p["residual"]
                rows.append((v["victim"], p["protection"], p["strongest"], verdict["headline"], "residual", r["mean"],
                             *r["ci"], r["n"], None))
            for t in p["teams"]:
                for m, s in t["recovered"].items():
                    if s:
                        rows.append((v["victim"], p["protection"], t["red_team"], m, "recovered", s["mean"], *s["ci"],
                                     s["n"], t["state"] if m == verdict["headline"] else None))
    con = sqlite3.connect(run / "results.sqlite", timeout=60)
    try:
        with con:
            con.execute("DROP TABLE IF EXISTS verdict")
            con.execute("CREATE TABLE verdict (victim TEXT, protection TEXT, red_team TEXT, metric TEXT, kind TEXT, "
                        "mean REAL, lo REAL, hi REAL, n INTEGER, state TEXT)")
            con.executemany("INSERT INTO verdict VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        con.close()
    return path
