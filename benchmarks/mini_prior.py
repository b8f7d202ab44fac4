"""#31's recipe choice on the development subjects (configs/mini-prior.yaml): per candidate recipe (a pair of
recipes ``db-<tag>`` / ``cdl-<tag>`` in the grid), the tables of benchmarks/mini_eval.py, the clean DreamBooth
cross-subject rate, and the rule written in the config before the grid ran, applied.

    cloakbench bench configs/mini-prior.yaml --out RUN
    python benchmarks/mini_prior.py RUN configs/mini-prior.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mini_eval import cross, print_summary  # benchmarks/ (this script's folder) is on sys.path

from cloakbench.bench import load_config
from cloakbench.bench.prior import MAX_SHARE
from cloakbench.minilab.demo import summarize

FLOOR, CROSS = 0.70, 0.10  # the rule's clean DreamBooth floor and cross-subject ceiling (configs/mini-prior.yaml)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("config", type=Path)
    args = ap.parse_args()
    cfg = load_config(args.config)
    chance(args.run)
    recipes = {r.name: r for r in cfg.recipes}
    tags = sorted({n.split("-", 1)[1] for n in recipes}, key=lambda t: (t[0] != "s", int(t[1:])))  # rule's order
    verdicts = []
    for tag in tags:
        pair = [recipes[f"db-{tag}"], recipes[f"cdl-{tag}"]]
        db = pair[0]
        print(f"\n## {tag}: {db.steps} steps, lr {db.lr:g}, latents {db.latents}, {db.num_class_images} class images\n")
        sub = cfg.model_copy(update={"recipes": pair})
        s = summarize(args.run, sub)
        print_summary(s)
        own, other = cross(args.run, sub, db.name)
        clean = sum(own) / len(own)
        xrate = sum(other) / len(other)
        worst = max(r[s["copy"]] for r in s["rows"] if r.get(s["copy"]) is not None)
        ok = clean >= FLOOR and xrate <= CROSS and worst <= MAX_SHARE
        verdicts.append((tag, ok, clean, xrate, worst))
        print(f"\nclean DreamBooth {clean:.3f} verified, {xrate:.3f} against the next subject; largest copy share "
              f"{worst:.3f}: {'qualifies' if ok else 'does not qualify'}")
    print("\n## The rule\n\n| candidate | clean verified | cross-subject | largest copy share | qualifies |\n|---|---|---|---|---|")
    for tag, ok, clean, xrate, worst in verdicts:
        print(f"| {tag} | {clean:.3f} | {xrate:.3f} | {worst:.3f} | {'yes' if ok else 'no'} |")
    qualified = [v for v in verdicts if v[1]]
    if qualified:
        print(f"\nchosen: {qualified[0][0]} (the first that qualifies: sample latents before cached, then fewest steps)")
    else:
        best = max(verdicts, key=lambda v: v[2])
        print(f"\nnone qualifies; chosen: {best[0]} (the highest clean DreamBooth verified share; the rule's floor is missed)")


def chance(run: Path) -> None:
    """How often photos of the 60 calibration subjects (8 each; never the development or evaluation subjects) are
    verified as one of the run's class images, and as one of its first 4: the identity test's chance level."""
    from cloakbench.bench.prior import embeddings, share
    from cloakbench.images import read_images
    from cloakbench.metrics import create_metric
    from cloakbench.models.mini import world

    face = create_metric("verified[mini]").face
    for folder in sorted((run / "artifacts").glob("class_images-*")):
        refs = embeddings(face, read_images(sorted(folder.glob("*.png")), None, min_size=None).images)
        photos = [world.photos(s, 8, seed=9) for s in world.calibration_subjects()]
        every = sum(share(face, x, refs) for x in photos) / len(photos)
        four = sum(share(face, x, refs[:4]) for x in photos) / len(photos)
        print(f"{folder.name}: calibration photos verified as one of its {len(refs)} class images {every:.3f}, "
              f"as one of the first 4 {four:.3f}")


if __name__ == "__main__":
    main()
