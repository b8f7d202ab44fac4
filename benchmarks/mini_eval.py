"""Markdown tables of a mini grid's effects (benchmarks/README.md, "Mini world v5"): per subject, each
protection's gap (clean - protected) and each red-team's gain, then the means with 95 % bootstrap intervals
over subjects and the recovered shares (:func:`cloakbench.minilab.demo.summarize`).

    cloakbench demo --full --out RUN          # or: cloakbench bench configs/mini-eval.yaml --out RUN
    python benchmarks/mini_eval.py RUN configs/mini-eval.yaml [configs/mini-baselines.yaml] [--cross]

More configs name the recipes of grids added into the same run folder (``cloakbench bench ... --add``).

``--cross`` also scores the clean DreamBooth samples of each subject against the next subject's reference
photos (sorted order, cyclic): the share verified there is the false-accept side of "the model learned
*this* subject" (#16 asks <= 10 %).

``--prior`` scores every cell's samples against each of the run's class (prior-preservation) images of the
same seed, one at a time: the share verified as one of them is how often DreamBooth draws its prior images
instead of the subject (with CDL + QES, the sampling suffix ", without bhj noisy pattern" is the class
prompt's suffix).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cloakbench.bench import load_config
from cloakbench.minilab.demo import summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("config", type=Path)
    ap.add_argument("more", type=Path, nargs="*", help="configs of grids added into RUN (their recipes)")
    ap.add_argument("--cross", action="store_true")
    ap.add_argument("--prior", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config)
    recipes = {r.name: r for r in cfg.recipes}
    for extra in args.more:  # recipes of the added grids, so each row gets its red-team's name
        recipes |= {r.name: r for r in load_config(extra).recipes if r.name not in recipes}
    cfg = cfg.model_copy(update={"recipes": list(recipes.values())})
    if args.cross:
        cross(args.run, cfg)
    if args.prior:
        prior(args.run, cfg)
    s = summarize(args.run, cfg)
    ids = s["identities"]
    metrics = list(s["metrics"])
    print(f"{len(ids)} subjects x {s['seeds']} seeds x {s['samples']} samples per cell\n")
    print("| protection | red team | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    for r in s["rows"]:
        print(f"| {r['protection']} | {r['red_team']} | "
              + " | ".join(f"{r[s['metrics'][m]]:.3f}" if r.get(s["metrics"][m]) is not None else "-" for m in metrics) + " |")
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


def cross(run: Path, cfg) -> None:
    """Verified rate of each clean DreamBooth cell's samples against its own and the next subject's references."""
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
        if lab["protection"] != "none" or lab["purification"] != "none" or lab.get("qes"):
            continue
        s = int(lab["identity"].removeprefix("subject"))
        images = read_images(sorted((run / "artifacts" / f"sample-{spec['inputs']['images'][:16]}").glob("*.png")), None,
                             min_size=None).images
        own.append(metric(images, refs[s]).value)
        other.append(metric(images, refs[subjects[(subjects.index(s) + 1) % len(subjects)]]).value)
    print(f"clean DreamBooth, {len(own)} cells: verified against the subject's references {sum(own) / len(own):.3f}, "
          f"against the next subject's {sum(other) / len(other):.3f}\n")


def prior(run: Path, cfg) -> None:
    """Share of each (protection, red team)'s samples verified as one of the class images of their seed."""
    import json
    from collections import defaultdict

    from cloakbench.images import read_images
    from cloakbench.metrics import create_metric
    from cloakbench.minilab.demo import team_of

    metric, team = create_metric("verified[mini]"), team_of(cfg)
    load = lambda folder: read_images(sorted(folder.glob("*.png")), None, min_size=None).images  # noqa: E731
    classes = {}
    for done in (run / "artifacts").glob("class_images-*/DONE.json"):
        classes[json.loads(done.read_text())["spec"]["params"]["seed"]] = load(done.parent)
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    for done in sorted((run / "artifacts").glob("evaluate-*/DONE.json")):
        spec = json.loads(done.read_text())["spec"]
        lab = spec["labels"]
        images = load(run / "artifacts" / f"sample-{spec['inputs']['images'][:16]}")
        shares[(lab["protection"], team(lab))].append(share_as_any(metric, images, classes[lab["seed"]]))
    n = len(next(iter(classes.values())))
    print(f"samples verified as one of the {n} class images of their seed (mean over cells)\n")
    print("| protection | red team | cells | as a class image |\n|---|---|---|---|")
    for (prot, red), v in sorted(shares.items()):
        print(f"| {prot} | {red} | {len(v)} | {sum(v) / len(v):.3f} |")
    print()


def share_as_any(metric, images, candidates) -> float:
    """Share of ``images`` ((N, 3, H, W) in [0, 1]) that ``metric`` (``verified[mini]``) verifies as at least one
    of ``candidates`` ((K, 3, H, W)), each scored alone as the only reference; an image with no toy found counts 0."""
    hits = [metric(images, c[None]).per_image for c in candidates]
    return sum(max(h or 0.0 for h in col) for col in zip(*hits)) / len(images)


if __name__ == "__main__":
    main()
