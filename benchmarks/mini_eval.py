"""Markdown tables of a mini grid's effects (benchmarks/README.md): per cell the means and the share of samples
that are one of the cell's class images; per subject each protection's gap (clean - protected) and each red
team's gain, the means with 95 % bootstrap intervals over subjects and the recovered shares; the paper's
Table 4 ablations as paired differences with their intervals (:func:`cloakbench.minilab.demo.summarize`, the
code the demo prints with).

    cloakbench demo --full --out RUN          # or: cloakbench bench configs/mini-eval.yaml --out RUN
    python benchmarks/mini_eval.py RUN configs/mini-eval.yaml [configs/mini-baselines.yaml] [--cross]

More configs name the recipes of grids added into the same run folder (``cloakbench bench ... --add``).

``--cross`` also scores the clean DreamBooth samples of each subject (recipe ``dreambooth``) against the next
subject's reference photos (sorted order, cyclic): the share verified there is the false-accept side of "the
model learned *this* subject" (#16 asks <= 10 %).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cloakbench.bench import load_config
from cloakbench.bench.prior import MAX_SHARE
from cloakbench.minilab.demo import PRIOR, summarize


def arguments(description: str, extra=lambda ap: None) -> tuple[argparse.Namespace, object]:
    """The command line of the mini analysis scripts: RUN, the grid's CONFIG, the configs of grids added into RUN
    (their recipes name the rows) and ``--also`` run folders holding other parts of the grid; returns the
    parsed arguments and the config with every recipe."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("run", type=Path)
    ap.add_argument("config", type=Path)
    ap.add_argument("--also", type=Path, action="append", default=[],
                    help="another run folder holding part of the same grid (e.g. the other seed, run in parallel)")
    ap.add_argument("more", type=Path, nargs="*", help="configs of grids added into RUN (their recipes)")
    extra(ap)
    args = ap.parse_args()
    cfg = load_config(args.config)
    recipes = {r.name: r for r in cfg.recipes}
    for path in args.more:  # recipes of the added grids, so each row gets its red-team's name
        recipes |= {r.name: r for r in load_config(path).recipes if r.name not in recipes}
    return args, cfg.model_copy(update={"recipes": list(recipes.values())})


def main() -> None:
    args, cfg = arguments(__doc__.splitlines()[0], lambda ap: ap.add_argument("--cross", action="store_true"))
    if args.cross:
        pairs = [cross(run, cfg, "dreambooth") for run in [args.run, *args.also]]
        own, other = [v for o, _ in pairs for v in o], [v for _, x in pairs for v in x]
        print(f"clean DreamBooth, {len(own)} cells: verified against the subject's references {sum(own) / len(own):.3f}, "
              f"against the next subject's {sum(other) / len(other):.3f}\n")
    print_summary(summarize([args.run, *args.also], cfg))


def print_summary(s: dict) -> None:
    ids, metrics = s["identities"], list(s["metrics"])
    cols = metrics + [s[k] for k in PRIOR if s.get(k)]
    print(f"{len(ids)} subjects x {s['seeds']} seeds x {s['samples']} samples per cell; prior: share of samples "
          "verified as one of the cell's class images; prior_refs: the same for the subject's own clean photos (the "
          "chance level); copy: pixel near-copies of a class image (bench/prior.py; "
          f"<= {MAX_SHARE:.0%} asked everywhere)\n")
    print("| protection | red team | " + " | ".join(c.split("[")[0] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in s["rows"]:
        key = lambda c: s["metrics"].get(c, c)  # noqa: E731
        print(f"| {r['protection']} | {r['red_team']} | "
              + " | ".join(f"{r[key(c)]:.3f}" if r.get(key(c)) is not None else "-" for c in cols) + " |")
    for k in ("prior", "copy"):
        worst = max((r[s[k]] for r in s["rows"] if s.get(k) and r.get(s[k]) is not None), default=None)
        if worst is not None:
            print(f"\nlargest {k} share of any cell: {worst:.3f} ({'within' if worst <= MAX_SHARE else 'OVER'} "
                  f"{MAX_SHARE:.0%})")
    for m in metrics:
        print(f"\n**{m}**: gap (clean - protected) and red-team gain (red - protected) per subject\n")
        print("| protection | red team | " + " | ".join(i.removeprefix("subject") for i in ids) + " | mean [95 % CI] | recovered [95 % CI] |")
        print("|---|---|" + "---|" * (len(ids) + 2))
        for e in s["effects"]:
            v = e.get(m)
            if not v:
                continue
            per = v.get("per_identity") or v.get("per_identity_gain")
            cells = " | ".join(f"{per[i]:+.2f}" if i in per else "-" for i in ids)
            if e["red_team"] == "none":
                mean = f"{v['mean']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], {v['same_sign']}/{v['n']} same sign"
                print(f"| {e['protection']} | gap | {cells} | {mean} | |")
            else:
                print(f"| {e['protection']} | {e['red_team']} | {cells} | {v['gain']:+.3f} | "
                      f"{100 * v['mean']:.0f} % [{100 * v['ci'][0]:.0f}, {100 * v['ci'][1]:.0f}] |")
    if s.get("ablations"):
        print("\n**Table 4 ablations**: paired difference per subject (team - baseline, same protection), mean "
              "[95 % CI], subjects with the mean's sign\n")
        print("| protection | team - baseline | " + " | ".join(metrics) + " |\n|---|---|" + "---|" * len(metrics))
        for a in s["ablations"]:
            cells = [f"{v['mean']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] {v['same_sign']}/{v['n']}" if (v := a.get(m)) else "-"
                     for m in metrics]
            print(f"| {a['protection']} | {a['team']} - {a['baseline']} | " + " | ".join(cells) + " |")


def cross(run: Path, cfg, recipe: str) -> tuple[list[float], list[float]]:
    """Verified rate of each clean ``recipe`` cell's plain samples against its own and the next subject's references."""
    import json

    from cloakbench.images import read_images
    from cloakbench.metrics import create_metric
    from cloakbench.models.mini import world

    metric = create_metric("verified[mini]")
    subjects = sorted(cfg.data.world.subjects)
    refs = {s: world.photos(s, cfg.data.world.photos, cfg.data.world.seed)[cfg.data.train:] for s in subjects}
    own, other = [], []
    for done in sorted((run / "artifacts").glob("evaluate-*/DONE.json")):
        spec = json.loads(done.read_text())["spec"]
        lab = spec["labels"]
        if lab["protection"] != "none" or lab["purification"] != "none" or lab.get("qes") or lab["recipe"] != recipe:
            continue
        s = int(lab["identity"].removeprefix("subject"))
        images = read_images(sorted((run / "artifacts" / f"sample-{spec['inputs']['images'][:16]}").glob("*.png")), None,
                             min_size=None).images
        own.append(metric(images, refs[s]).value)
        other.append(metric(images, refs[subjects[(subjects.index(s) + 1) % len(subjects)]]).value)
    return own, other


if __name__ == "__main__":
    main()
