"""``cloakbench demo``: the paper's protocol on the mini stack, end to end, in minutes on a CPU.

Runs ``mini-paper.yaml`` (shipped beside this file; ``configs/mini-paper.yaml`` is the same file)
through the bench runner: clean DreamBooth, a protection, red-teams (CodeSR, and the paper's full
CodeSR + CDL + QES), identity and quality metrics on held-out subjects; ``--full`` runs
``mini-eval.yaml`` (8 subjects x 2 seeds, AdvDM and ASPL at the mini default 16/255, CodeSR alone and
CodeSR + CDL + QES). Then the latent-misalignment analysis with the mini CLIP, the HTML report, each
protection's gap and how much of it each red-team recovers, for identity (verified share, ISM) and
quality (CLIP-IQAC; the paper reports both), with 95 % bootstrap intervals over subjects
(:mod:`cloakbench.bench.effects`):

    recovered = mean[M(red-team) - M(protected)] / mean[M(clean) - M(protected)]

Nothing is tuned for the demo: the numbers are whatever the shipped models and the config give.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = Path(__file__).with_name("mini-paper.yaml")
FULL_CONFIG = Path(__file__).with_name("mini-eval.yaml")
IDENTITY = ("verified", "ism")  # identity metric prefixes, the first is the headline (share of samples verified)
QUALITY = ("clip_iqac",)
PRIOR = ("prior", "prior_refs", "copy")  # the class-image shares of each cell (bench/prior.py)
ORDER = ["none", "JPEG", "GrIDPure", "CodeSR", "CDL", "CDL + QES", "CodeSR + CDL", "CodeSR + CDL + QES"]


def team_of(cfg) -> Callable[[Mapping[str, Any]], str]:
    """Row -> red-team name (:func:`cloakbench.bench.effects.team_name`) from its purification, recipe and QES."""
    from ..bench.effects import team_name

    cdl = {r.name: r.cdl for r in cfg.recipes}
    # rows of recipes that are not ``cfg``'s (another grid added into the run folder) belong to no team of it
    return lambda row: team_name(row["purification"], cdl[row["recipe"]], bool(row["qes"])) if row["recipe"] in cdl else None


def summarize(run_dir: str | Path | list, cfg) -> dict[str, Any]:
    """Cell means over identities (seeds averaged within an identity), each protection's gap and each
    red-team's recovered share for the identity and quality metrics, with 95 % bootstrap intervals over
    identities (:mod:`cloakbench.bench.effects`); the paper's Table 4 ablations as paired differences with
    their intervals (``paired``); and per cell the share of samples that are one of its class images
    (``prior[<backend>]``, :mod:`cloakbench.bench.prior`). The demo and benchmarks/mini_eval.py print this.
    ``run_dir`` may be a list of run folders that each ran part of the grid (e.g. one seed each, in parallel)."""
    from ..bench.effects import ABLATIONS, gap, paired, per_identity, recovery, resolved
    from ..bench.prior import class_image_rows
    from ..bench.runner import identities, identity_files
    from ..bench.store import read_rows
    from ..images import read_images

    runs = [Path(r) for r in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    raw = [row for run in runs for row in read_rows(run / "results.sqlite")]
    verified = next((m for m in cfg.metrics if m.split("[")[0] == IDENTITY[0]), None)
    if verified is not None:
        refs = {ident: read_images(identity_files(cfg, ident)[1], cfg.resolution, min_size=None).images
                for ident in identities(cfg)}
        raw = raw + [row for run in runs for row in class_image_rows(run, verified, refs)]
    cells = per_identity(raw, team_of(cfg))
    metrics = sorted({m for ms in cells.values() for m in ms})
    named = {p: next((m for m in metrics if m.split("[")[0] == p), None) for p in IDENTITY + QUALITY}
    rank = lambda cell: (cell[0] != "none", cell[0], ORDER.index(cell[1]) if cell[1] in ORDER else len(ORDER), cell[1])  # noqa: E731
    rows = [{"protection": p, "red_team": t, **{m: float(np.mean(list(v.values()))) for m, v in cells[(p, t)].items()}}
            for p, t in sorted(cells, key=rank)]
    effects = []
    for prot in sorted({p for p, _ in cells} - {"none"}):
        for team in ["none"] + [t for p, t in sorted(cells, key=rank) if p == prot and t != "none"]:
            row: dict[str, Any] = {"protection": prot, "red_team": team}
            for prefix, metric in named.items():
                if metric is not None:
                    row[prefix] = gap(cells, metric, prot) if team == "none" else recovery(cells, metric, prot, team)
            effects.append(row)
    for e in effects:
        for prefix in named:
            if e["red_team"] != "none" and e.get(prefix):
                e[prefix]["resolved"] = resolved(e[prefix])
    ablations = [{"protection": prot, "team": team, "baseline": base,
                  **{prefix: paired(cells, metric, prot, team, base) for prefix, metric in named.items() if metric}}
                 for prot in sorted({p for p, _ in cells} - {"none"}) for team, base in ABLATIONS
                 if (prot, team) in cells and (prot, base) in cells]
    identities = {i for ms in cells.values() for v in ms.values() for i in v}
    return {"metrics": {k: v for k, v in named.items() if v}, "identities": sorted(identities), "seeds": len(cfg.seeds),
            "samples": cfg.sampling.n, "rows": rows, "effects": effects, "ablations": ablations,
            **{k: next((m for m in metrics if m.split("[")[0] == k), None) for k in PRIOR}}


def run_demo(out: str | Path, *, config: str | Path = CONFIG, progress: Callable | None = None,
             device: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Run (or resume) the demo grid in ``out``; returns the summary (also written to ``demo.json``).
    ``workers``: stages run at once (:func:`cloakbench.bench.executors.run_local`); default 2 on a CPU with
    two or more cores (the mini models are too small for two threads to share one training well), else 1."""
    import torch

    from ..analysis.misalignment import analyze
    from ..bench import Runner, load_config
    from ..bench.config import prompts
    from ..bench.executors import cores, run_local
    from ..bench.report import build
    from ..bench.store import export_csv
    from ..images import read_images
    from ..models import load_clip

    out = Path(out)
    cfg = load_config(config)
    runner = Runner(cfg, out, device=device or "cpu")
    if workers is None:
        workers = min(2, cores()) if runner.device == "cpu" else 1
    counts = run_local(runner, progress, workers=workers)
    export_csv(runner.db, out / "results.csv")
    report = build(out)

    # latent misalignment (docs/PAPER.md §3) with the mini CLIP: clean vs protected vs purified photos, paired by file
    clean: dict[str, None] = {}
    groups: dict[str, list[Path]] = {}
    protected = {s.hash: s.params["method"] for s in runner.specs if s.kind == "protect" and runner.done(s)}
    for spec in runner.specs:
        if not runner.done(spec):
            continue
        pngs = sorted(runner.folder(spec).glob("*.png"))
        if spec.kind == "protect":
            done = json.loads((runner.folder(spec) / "DONE.json").read_text())
            clean.update(dict.fromkeys(done["outputs"]["sources"]))
            groups.setdefault(spec.params["method"], []).extend(pngs)
        elif spec.kind == "purify" and spec.inputs["images"] in protected:
            groups.setdefault(f"{protected[spec.inputs['images']]}+{spec.params['method']}", []).extend(pngs)
    sets: dict[str, torch.Tensor] = {}
    if clean:
        sets["clean"] = read_images([Path(p) for p in clean], cfg.resolution, min_size=None).images
        sets.update({k: read_images(v, cfg.resolution, min_size=None).images for k, v in groups.items()})
    analysis = analyze(load_clip("mini"), sets, out / "analysis", clean="clean",
                       concepts=(f"a photo of a {cfg.subject}", "a photo of noise pattern"),
                       prompt=prompts(cfg)[0], projections=("pca",)) if sets else {}
    summary = {**summarize(out, cfg), "stages": counts, "report": str(report),
               "misalignment": analysis.get("groups", {})}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


SHORT = {"verified": "verified", "ism": "ISM", "fdfr": "FDFR", "clip_iqac": "IQA", "copy": "copy"}
UNRESOLVED = "not measured"  # a recovered share whose 95 % interval is too wide (bench.effects.resolved)


def tables(summary: dict[str, Any]) -> list:
    """The demo's terminal tables (rich), each under 80 columns: cell means; gaps and recovered shares with
    their intervals; latent misalignment."""
    from rich.markup import escape
    from rich.table import Table

    from ..bench.effects import RESOLVED_WIDTH

    n = len(summary["identities"])
    cols = sorted({k for r in summary["rows"] for k in r if k.split("[")[0] in SHORT},
                  key=lambda c: list(SHORT).index(c.split("[")[0]))
    means = Table(title=f"DreamBooth samples: mean of {n} subject(s) x {summary['seeds']} seed(s) x {summary['samples']} "
                        "samples per cell",
                  caption=escape("verified: share of samples the identity encoder verifies as the subject; IQA: "
                                 "CLIP-IQAC[mini]; copy: share that are pixel near-copies of a class image"))
    for c in ("protection", "red team", *(SHORT.get(c.split("[")[0], c) for c in cols)):
        means.add_column(escape(c), justify="left" if c in ("protection", "red team") else "right")
    for r in summary["rows"]:
        means.add_row(r["protection"], r["red_team"], *("-" if r.get(c) is None else f"{r[c]:.2f}" for c in cols))

    def fmt(e: dict | None, share: bool) -> str:
        if not e:
            return "-"
        lo, hi = e["ci"]
        if share and not e.get("resolved", True):
            return UNRESOLVED
        if share:
            return f"{100 * e['mean']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"
        return f"{e['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (f" {e['same_sign']}/{e['n']}" if "same_sign" in e else "")

    keys = list(summary["metrics"])
    effects = Table(title=f"protection gap (clean - protected) and share of it recovered, 95% CI over {n} subjects",
                    caption=escape("gap: mean [CI] and subjects with the mean's sign; recovered: mean[red - prot] / "
                                   f"mean[gap]. {UNRESOLVED}: its 95% interval is {100 * RESOLVED_WIDTH:.0f} points "
                                   "wide or more at this size (it cannot tell 0% from 50%); `cloakbench demo --full` "
                                   "measures it"))
    for c in ("protection", "red team", *(SHORT.get(k, k) for k in keys)):
        effects.add_column(escape(c), justify="left" if c in ("protection", "red team") else "right")
    for e in summary["effects"]:
        label = "gap" if e["red_team"] == "none" else e["red_team"]
        effects.add_row(e["protection"], label, *(fmt(e.get(k), e["red_team"] != "none") for k in keys))
    out = [means, effects]
    if summary.get("misalignment"):
        mis = Table(title="latent misalignment (mini CLIP): p(toy) vs p(noise pattern)")
        for col in ("set", "p(toy)", "cos gap", "cos to clean"):
            mis.add_column(col)
        f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        for name, g in summary["misalignment"].items():
            mis.add_row(name, f(g["p_subject"]), f(g["cos_gap"]), f(g.get("cos_to_paired_clean")))
        out.append(mis)
    return out
