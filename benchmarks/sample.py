"""Seconds per image of quality-enhanced sampling (QES: 100 PNDM steps, CFG 7.5, negative prompt), fp32 and
half precision, in one run (not a timed test).

CPU: the tiny model at 64 px. GPU (``--full``): the SD 2.1-base architecture with random weights at 512 px
(speed does not depend on weight values), batch 8.

    python benchmarks/sample.py [--images 4]
    python benchmarks/sample.py --full --device cuda --images 16
"""

from __future__ import annotations

import argparse
import time

import torch

from cloakbench import stages
from cloakbench.models import build_tiny
from cloakbench.models.device import parse_dtype
from cloakbench.personalize import CDLPolicy
from cloakbench.sample import generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    size = 512 if args.full else 64
    cfg = stages.sample_config(CDLPolicy(enabled=True), qes=True, steps=args.steps, batch_size=8)
    print(f"| dtype | images | s / image |  (QES {args.steps} PNDM steps, CFG {cfg.guidance}, batch {cfg.batch_size}, "
          f"{size} px, {'SD 2.1-base random' if args.full else 'tiny'}, {where}, torch {torch.__version__})")
    print("|---|---|---|")
    for dtype in ["fp32"] + (["bf16", "fp16"] if args.device.startswith("cuda") else []):
        if args.full:
            from cloakbench.testing.random_sd import build_sd21_base_random

            model = build_sd21_base_random(device=args.device, dtype=parse_dtype(dtype))
        else:
            model = build_tiny().to(torch.device(args.device), parse_dtype(dtype))
        generate(model, ["a photo of sks person"], 2, stages.sample_config(qes=True, steps=2), height=size, width=size)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(model, ["a photo of sks person"], args.images, cfg, height=size, width=size)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        print(f"| {dtype} | {args.images} | {(time.perf_counter() - t0) / args.images:.2f} |", flush=True)
        del model


if __name__ == "__main__":
    main()
