"""Where CDL loses identity in the mini world: clean DreamBooth with and without CDL, sampled plain, with the
CDL suffix, with QES's negative prompt alone and with full QES, on *development* subjects only (23, 135,
271, 447: the recipe's, never the evaluation subjects of configs/mini-eval.yaml).

Per subject: 4 clean photos, DreamBooth as the bench runs it (prior with 4 class images of 20 steps, text
encoder trained), 8 samples of "a photo of sks toy" per sampling variant (20 PNDM steps, the same seeds),
scored by ``verified[mini]`` against the subject's 4 reference photos, and against each of the 4 class
images (a sample verified as one of them is the prior drawn instead of the subject).

    python benchmarks/mini_cdl.py [--steps 200] [--latents cached] [--subjects 23 135 271 447]
                                  [--frozen-text] [--new-token "<bhj>"]

``--frozen-text`` trains the UNet only (the reference fine-tunes the text encoder too); ``--new-token`` gives
the noise phrase a fresh learned token (:class:`cloakbench.personalize.CDLPolicy`'s extension).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    from cloakbench.metrics import create_metric
    from cloakbench.models import load_model
    from cloakbench.models.mini import world
    from cloakbench.personalize import CDLPolicy, DreamBoothTrainer, TrainConfig
    from cloakbench.sample import generate, prepare_class_images
    from cloakbench.stages import sample_config
    from cloakbench.bench.prior import embeddings, share

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[23, 135, 271, 447])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--latents", choices=["cached", "sample"], default="cached")
    ap.add_argument("--frozen-text", action="store_true", help="train the UNet only")
    ap.add_argument("--new-token", default=None, help="CDL's noise token, e.g. '<bhj>' (default: the text 'bhj')")
    args = ap.parse_args()
    verified = create_metric("verified[mini]")
    tmp = Path(tempfile.mkdtemp(prefix="mini-cdl-"))
    classes = prepare_class_images(load_model("mini"), 4, "a photo of toy", tmp / "classes", steps=20, resolution=32)
    class_emb = embeddings(verified.face, classes)
    variants = {"plain": dict(qes=False, steps=20), "plain + suffix": dict(qes=False, steps=20, suffix=True),
                "negative only": dict(qes=True, steps=20, suffix=False), "QES": dict(qes=True, steps=20)}
    rows: dict[tuple[bool, str], list[float]] = {}
    prior: dict[tuple[bool, str], list[float]] = {}
    for cdl in (False, True):
        policy = CDLPolicy(enabled=cdl, new_token=args.new_token if cdl else None)
        for s in args.subjects:
            photos = world.photos(s, 8, seed=0)
            model = load_model("mini")
            cfg = TrainConfig(instance_prompt="a photo of sks toy", class_prompt="a photo of toy", steps=args.steps,
                              lr=2e-4, resolution=32, num_class_images=4, class_steps=20, cdl=policy,
                              latents=args.latents, train_text_encoder=not args.frozen_text)
            DreamBoothTrainer(model, cfg, tmp / f"{s}-{cdl}").fit(photos[:4], classes)
            for name, kw in variants.items():
                imgs = generate(model, ["a photo of sks toy"], 8, sample_config(policy, **kw), seed=0)
                rows.setdefault((cdl, name), []).append(verified(imgs, photos[4:]).value)
                prior.setdefault((cdl, name), []).append(share(verified.face, imgs, class_emb))  # drew a prior image
    print(f"{args.steps} steps, latents {args.latents}, text encoder {'frozen' if args.frozen_text else 'trained'}, "
          f"noise token {args.new_token or 'bhj (text)'}; share of samples per subject ({' '.join(map(str, args.subjects))})")
    for table, title in ((rows, "verified as the subject"), (prior, "verified as one of the 4 class images")):
        print(f"\n{title}\n\n| training | sampling | " + " | ".join(map(str, args.subjects)) + " | mean |")
        print("|---|---|" + "---|" * (len(args.subjects) + 1))
        for (cdl, name), vals in table.items():
            print(f"| {'CDL' if cdl else 'DreamBooth'} | {name} | " + " | ".join(f"{v:.2f}" for v in vals)
                  + f" | {sum(vals) / len(vals):.3f} |")


if __name__ == "__main__":
    main()
