"""``cloakbench demo``: the paper's protocol on the mini stack, end to end, in minutes on a CPU.

Runs ``mini-paper.yaml`` (shipped beside this file; ``configs/mini-paper.yaml`` is the same file)
through the bench runner: clean DreamBooth, protections, red-teams none / JPEG / GrIDPure / CodeSR /
CDL / CodeSR + CDL, QES sampling, identity and quality metrics. Then the latent-misalignment analysis
with the mini CLIP, the HTML report, and a table of how much of the protection's gap each red-team
recovers, for identity (ISM) and for quality (CLIP-IQAC; the paper reports both):

    recovered = (M(red-team) - M(protected, no red-team)) / (M(clean) - M(protected, no red-team))

Nothing is tuned for the demo: the numbers are whatever the shipped models and the config give.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).with_name("mini-paper.yaml")
# metric prefix -> (row key, smallest gap worth a ratio): a smaller clean-vs-protected gap is within
# sampling noise and is reported as "no gap" (ISM: cosine units; CLIP-IQAC: p_good - p_bad in [-1, 1])
GAPS = {"ism": ("recovered", 0.02), "clip_iqac": ("quality_recovered", 0.05)}
# (purification, CDL) -> red-team name, in the paper's order
RED_TEAMS = {("none", False): "none", ("jpeg", False): "JPEG", ("gridpure", False): "GrIDPure",
             ("codesr-mini", False): "CodeSR", ("none", True): "CDL", ("codesr-mini", True): "CodeSR + CDL"}


def summarize(run_dir: str | Path, cfg) -> dict[str, Any]:
    """Mean metric per (protection, red-team) over identities and seeds, and the recovered gap."""
    from ..bench.store import read_rows

    cdl = {r.name: r.cdl for r in cfg.recipes}
    acc: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    identities: set[str] = set()
    for row in read_rows(Path(run_dir) / "results.sqlite"):
        team = RED_TEAMS.get((row["purification"], cdl.get(row["recipe"], False)))
        if team is None or row["value"] is None:
            continue
        acc[(row["protection"], team)][row["metric"]].append(float(row["value"]))
        identities.add(row["identity"])
    means = {k: {m: sum(v) / len(v) for m, v in ms.items()} for k, ms in acc.items()}
    names = {prefix: next((m for ms in means.values() for m in ms if m.startswith(prefix)), None) for prefix in GAPS}
    clean = {p: means.get(("none", "none"), {}).get(m) if m else None for p, m in names.items()}
    rows = []
    order = list(RED_TEAMS.values())
    for (prot, team), ms in sorted(means.items(), key=lambda kv: (kv[0][0] != "none", kv[0][0], order.index(kv[0][1]))):
        row = {"protection": prot, "red_team": team, **ms}
        for prefix, (key, min_gap) in GAPS.items():
            m = names[prefix]
            base = means.get((prot, "none"), {}).get(m)
            rec: float | str | None = None
            if prot != "none" and team != "none" and None not in (clean[prefix], base, ms.get(m)):
                gap = clean[prefix] - base
                rec = (ms[m] - base) / gap if gap >= min_gap else "no gap"
            row[key] = rec
        rows.append(row)
    return {"identity_metric": names["ism"], "quality_metric": names["clip_iqac"], "clean": clean["ism"],
            "clean_quality": clean["clip_iqac"], "identities": len(identities), "seeds": len(cfg.seeds),
            "samples": cfg.sampling.n, "rows": rows}


def run_demo(out: str | Path, *, config: str | Path = CONFIG, progress: Callable | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Run (or resume) the demo grid in ``out``; returns the summary (also written to ``demo.json``)."""
    import torch

    from ..analysis.misalignment import analyze
    from ..bench import Runner, load_config
    from ..bench.config import prompts
    from ..bench.report import build
    from ..bench.store import export_csv
    from ..images import read_images
    from ..models import load_clip

    out = Path(out)
    cfg = load_config(config)
    runner = Runner(cfg, out, device=device or "cpu")
    counts = runner.execute(progress)
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
