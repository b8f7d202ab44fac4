"""``cloakbench demo``: the paper's protocol on the mini stack, end to end, in minutes on a CPU.

Runs ``mini-paper.yaml`` (shipped beside this file; ``configs/mini-paper.yaml`` is the same file)
through the bench runner: clean DreamBooth, a protection, red-teams (CodeSR, and the paper's full
CodeSR + CDL + QES), identity and quality metrics on held-out subjects; ``--full`` runs
``mini-eval.yaml`` (8 subjects x 2 seeds, AdvDM and ASPL at the mini default 16/255, CodeSR alone and
CodeSR + CDL + QES). Then the latent-misalignment analysis with the mini CLIP, the HTML report, each
protection's gap and how much of it each red-team recovers, for identity (verified share, ISM) and
quality (CLIP-IQAC; the paper reports both), with 95 % bootstrap intervals over subjects, by the
code every ``cloakbench bench`` run uses (:mod:`cloakbench.bench.verdict`):

    recovered = mean[M(red-team) - M(protected)] / mean[M(clean) - M(protected)]

Nothing is tuned for the demo: the numbers are whatever the shipped models and the config give.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


CONFIG = Path(__file__).with_name("mini-paper.yaml")
FULL_CONFIG = Path(__file__).with_name("mini-eval.yaml")
IDENTITY = ("verified", "ism")  # identity metric prefixes, the first is the headline (share of samples verified)
QUALITY = ("clip_iqac",)
PRIOR = ("prior", "prior_refs", "copy")  # the class-image shares of each cell (bench/prior.py)


def summarize(run_dir: str | Path | list, cfg) -> dict[str, Any]:
    """The run's verdict (:func:`cloakbench.bench.verdict.compute`, the statistics of every grid) for the rows of
    ``cfg``'s recipes, with the class-image shares of each cell (``prior[<backend>]``, :mod:`cloakbench.bench.prior`)
    as extra rows, keyed for the mini tables: ``metrics`` (prefix -> metric), ``rows`` (cell means), ``effects``
    (each protection's gap, then each red team's recovered share), ``ablations`` (the paper's Table 4 as paired
    differences) and ``verdict`` (the whole verdict). The demo and benchmarks/mini_eval.py print this.
    ``run_dir`` may be a list of run folders that each ran part of the grid (e.g. one seed each, in parallel)."""
    from ..bench.prior import class_image_rows
    from ..bench.config import identities, identity_files
    from ..bench.verdict import compute
    from ..images import read_images

    runs = [Path(r) for r in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    extra: list = []
    verified = next((m for m in cfg.metrics if m.split("[")[0] == IDENTITY[0]), None)
    if verified is not None:
        refs = {ident: read_images(identity_files(cfg, ident)[1], cfg.resolution, min_size=None).images
                for ident in identities(cfg)}
        extra = [row for run in runs for row in class_image_rows(run, verified, refs)]
    verdict = compute(runs, recipes_of=[r.name for r in cfg.recipes], extra_rows=extra)
    victim = verdict["victims"][0] if verdict["victims"] else {"rows": [], "protections": [], "ablations": []}
    metrics = list(verdict["metrics"])
    named = {p: next((m for m in metrics if m.split("[")[0] == p), None) for p in IDENTITY + QUALITY}
    named = {k: v for k, v in named.items() if v}
    effects = []
    for p in victim["protections"]:
        effects.append({"protection": p["protection"], "red_team": "none", **{k: p["gap"].get(m) for k, m in named.items()}})
        effects += [{"protection": p["protection"], "red_team": t["red_team"],
                     **{k: t["recovered"].get(m) for k, m in named.items()}} for t in p["teams"]]
    ablations = [{"protection": a["protection"], "team": a["team"], "baseline": a["baseline"],
                  **{k: a.get(m) for k, m in named.items()}} for a in victim["ablations"]]
    return {"metrics": named, "identities": verdict["identities"], "seeds": len(cfg.seeds), "samples": cfg.sampling.n,
            "rows": victim["rows"], "effects": effects, "ablations": ablations, "verdict": verdict,
            **{k: next((m for m in metrics if m.split("[")[0] == k), None) for k in PRIOR}}


def demo_runner(out: str | Path, *, config: str | Path = CONFIG, device: str | None = None):
    """The bench runner of the demo grid ``config`` in ``out`` (on the CPU unless ``device`` says otherwise)."""
    from ..bench import Runner, load_config

    return Runner(load_config(config), Path(out), device=device or "cpu")


def run_demo(out: str | Path, *, config: str | Path = CONFIG, progress: Callable | None = None,
             device: str | None = None, workers: int | None = None, runner=None) -> dict[str, Any]:
    """Run (or resume) the demo grid in ``out``; returns the summary (also written to ``demo.json``).
    ``runner``: the :func:`demo_runner` to use (the CLI makes it first, for its progress display).
    ``workers``: stages run at once (:func:`cloakbench.bench.executors.run_local`); default 2 on a CPU with
    two or more cores (the mini models are too small for two threads to share one training well), else 1."""
    import torch

    from ..analysis.misalignment import analyze
    from ..bench.config import prompts
    from ..bench.executors import default_workers, run_local
    from ..bench.report import build
    from ..bench.store import export_csv
    from ..bench.verdict import write
    from ..images import read_images
    from ..models import load_clip

    out = Path(out)
    runner = runner or demo_runner(out, config=config, device=device)
    cfg = runner.cfg
    if workers is None:
        workers = default_workers(runner.device)
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
    write(out, summary["verdict"])
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


SHORT = {"verified": "verified", "ism": "ISM", "fdfr": "FDFR", "clip_iqac": "IQA", "copy": "copy"}


def tables(summary: dict[str, Any], width: int = 80) -> list:
    """The demo's terminal tables (rich), each within ``width`` columns: cell means; the verdict (gaps and
    recovered shares with their intervals, :func:`cloakbench.bench.verdict_view.tables`, as ``cloakbench bench``
    prints it); latent misalignment."""
    from rich.table import Table
    from rich.text import Text

    from ..bench.verdict_view import UNRESOLVED, tables as verdict_tables

    n = len(summary["identities"])
    cols = sorted({k for r in summary["rows"] for k in r if k.split("[")[0] in SHORT},
                  key=lambda c: list(SHORT).index(c.split("[")[0]))
    means = Table(title=f"DreamBooth samples: mean of {n} subject(s) x {summary['seeds']} seed(s) x {summary['samples']} "
                        "samples per cell",
                  caption=Text("verified: share of samples the identity encoder verifies as the subject; IQA: "
                               "CLIP-IQAC[mini]; copy: share that are pixel near-copies of a class image"))
    for c in ("protection", "red team", *(SHORT.get(c.split("[")[0], c) for c in cols)):
        means.add_column(Text(c), justify="left" if c in ("protection", "red team") else "right")
    for r in summary["rows"]:
        means.add_row(r["protection"], r["red_team"], *("-" if r.get(c) is None else f"{r[c]:.2f}" for c in cols))
    out: list = [means, *verdict_tables(summary["verdict"], width=width)]
    out.append(Text(f"{UNRESOLVED}: `cloakbench demo --full` (8 subjects x 2 seeds) measures it"))
    if summary.get("misalignment"):
        mis = Table(title="latent misalignment (mini CLIP): p(toy) vs p(noise pattern)")
        for col in ("set", "p(toy)", "cos gap", "cos to clean"):
            mis.add_column(col)
        f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        for name, g in summary["misalignment"].items():
            mis.add_row(name, f(g["p_subject"]), f(g["cos_gap"]), f(g.get("cos_to_paired_clean")))
        out.append(mis)
    return out
