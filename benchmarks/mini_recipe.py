"""How many DreamBooth steps the mini world needs to learn a subject: the demo recipe's choice, made on
*development* subjects only (never on the evaluation subjects of configs/mini-eval.yaml).

For each (steps, lr) setting and subject: clean DreamBooth as the bench runs it (4 photos, prior loss with
4 class images of 20 steps, text encoder trained), 8 plain samples of "a photo of sks toy" (the bench's
sampler, 20 PNDM steps), and the share verified as the subject by ``verified[mini]`` against the
subject's 4 reference photos; the cross-subject rate scores the same samples against the next subject's
references (a model of another subject must not pass). The rule, fixed before running: the smallest
setting (fewest steps, then lowest lr) with mean verified >= 0.7 and cross-subject <= 0.1 on the
development subjects; each run is scored at every length on the way (stop, sample, resume).

    python benchmarks/mini_recipe.py [--subjects 23 135 271 447] [--steps 100 200 400] [--lr 2e-4 5e-4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    from cloakbench.metrics import create_metric
    from cloakbench.models import load_model
    from cloakbench.models.mini import world
    from cloakbench.personalize import DreamBoothTrainer, TrainConfig
    from cloakbench.sample import generate, prepare_class_images
    from cloakbench.stages import sample_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[23, 135, 271, 447])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-4, 5e-4])
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    verified = create_metric("verified[mini]")
    photos = {s: world.photos(s, 8, seed=0) for s in args.subjects}  # the bench's split: 4 train, 4 references
    tmp = Path(tempfile.mkdtemp(prefix="mini-recipe-"))
    classes = prepare_class_images(load_model("mini"), 4, "a photo of toy", tmp / "classes", steps=20, resolution=32)
    print(f"{'steps':>5} {'lr':>7} | " + " ".join(f"{s:>5}" for s in args.subjects) + " |  mean | cross | s/step")
    for lr in args.lr:
        own: dict[int, list[float]] = {n: [] for n in args.steps}
        cross: dict[int, list[float]] = {n: [] for n in args.steps}
        secs = 0.0
        for k, s in enumerate(args.subjects):
            model = load_model("mini")
            cfg = TrainConfig(instance_prompt="a photo of sks toy", class_prompt="a photo of toy", steps=max(args.steps),
                              lr=lr, resolution=32, num_class_images=4, class_steps=20, latents="cached")
            trainer = DreamBoothTrainer(model, cfg, tmp / f"{s}-{lr}")
            other = args.subjects[(k + 1) % len(args.subjects)]
            for i, n in enumerate(sorted(args.steps)):  # one run, scored at each length (stop, sample, resume)
                t = time.perf_counter()
                trainer.fit(photos[s][:4], classes, resume=i > 0, stop_after=n)
                secs += time.perf_counter() - t
                imgs = generate(model, ["a photo of sks toy"], args.samples, sample_config(steps=20), seed=0)
                own[n].append(verified(imgs, photos[s][4:]).value)
                cross[n].append(verified(imgs, photos[other][4:]).value)
        for n in sorted(args.steps):
            print(f"{n:>5} {lr:>7.0e} | " + " ".join(f"{v:5.2f}" for v in own[n]) + f" | {sum(own[n]) / len(own[n]):5.2f} | "
                  f"{sum(cross[n]) / len(cross[n]):5.2f} | {secs / len(args.subjects) / max(args.steps):.3f}", flush=True)


if __name__ == "__main__":
    main()
