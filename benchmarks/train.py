"""DreamBooth training speed and peak memory, full and LoRA (not a timed test).

CPU: the tiny model at 64 px. GPU (``--full``): the SD 2.1-base architecture with random weights at
512 px, the paper's recipe (UNet + text encoder, prior preservation, one instance + one class image
per step), bf16 autocast, gradient checkpointing optional. Goal on one H100: 1000 full steps in at
most 5 minutes; LoRA under 24 GB.

    python benchmarks/train.py [--steps 20]
    python benchmarks/train.py --full --device cuda --steps 50 --mixed-precision bf16 [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

from cloakbench.models import build_tiny
from cloakbench.personalize import DreamBoothTrainer, TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--8bit-adam", dest="adam8", action="store_true")
    args = ap.parse_args()
    size = 512 if args.full else 64
    g = torch.Generator().manual_seed(0)
    inst, cls = torch.rand(4, 3, size, size, generator=g), torch.rand(8, 3, size, size, generator=g)
    print(f"| recipe | steps | steps/s | s per 1000 steps | peak memory |  ({args.device}, {size} px, "
          f"{'SD 2.1-base random' if args.full else 'tiny'}, mp={args.mixed_precision}, ckpt={args.gradient_checkpointing})")
    print("|---|---|---|---|---|")
    for lora in (False, True):
        if args.full:
            from cloakbench.models.random_sd import build_sd21_base_random

            model = build_sd21_base_random(device=args.device)
            torch.cuda.reset_peak_memory_stats() if args.device.startswith("cuda") else None
        else:
            model = build_tiny()
        cfg = TrainConfig(steps=args.steps, lr=1e-4 if lora else 5e-7, lora=lora, resolution=size,
                          mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                          use_8bit_adam=args.adam8, checkpoint_every=0)
        with tempfile.TemporaryDirectory() as out:
            trainer = DreamBoothTrainer(model, cfg, out)
            trainer.save = lambda: None  # measure training only
            t0 = time.perf_counter()
            trainer.fit(inst.to(args.device), cls.to(args.device))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
        if args.device.startswith("cuda"):
            mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (CUDA)"
        else:
            mem = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB max RSS"
        print(f"| {'LoRA r4 (UNet)' if lora else 'full (UNet + text encoder)'} + prior | {args.steps} | "
              f"{args.steps / sec:.2f} | {1000 * sec / args.steps:.0f} | {mem} |", flush=True)
        del model, trainer


if __name__ == "__main__":
    main()
