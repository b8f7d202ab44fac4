"""DreamBooth training speed: the trainer against a bare loop of the same math, in one run (not a timed test).

Both train the same model class from the same weights, on the same batch (one instance + one class image
per step, prior preservation), precision and optimizer; the bare loop (:mod:`cloakbench.testing.bare`)
has no log, no checkpoint and no per-step sync. The ratio trainer / bare is the share of the hardware's
pace the trainer reaches (goal >= 0.90). Latent caching is timed in both.

CPU: the tiny model at 64 px. GPU (``--full``): the SD 2.1-base architecture with random weights at 512 px,
the paper's recipe (UNet + text encoder), bf16 autocast.

    python benchmarks/train.py [--steps 60]
    python benchmarks/train.py --full --device cuda --steps 100 --mixed-precision bf16 [--compile]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

from cloakbench.models import build_tiny
from cloakbench.personalize import DreamBoothTrainer, TrainConfig
from cloakbench.testing.bare import bare_losses


def build(args):
    if args.full:
        from cloakbench.testing.random_sd import build_sd21_base_random

        return build_sd21_base_random(device=args.device)
    return build_tiny().to(torch.device(args.device))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(kind: str, args, cfg: TrainConfig, inst: torch.Tensor, cls: torch.Tensor) -> float:
    """Wall time of ``cfg.steps`` steps of the trainer or of the bare loop on a freshly built model."""
    model = build(args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        trainer = DreamBoothTrainer(model, cfg, out)
        t0 = time.perf_counter()
        if kind == "trainer":
            trainer.save = lambda: None  # measure training only
            trainer.fit(inst.to(args.device), cls.to(args.device))
        else:
            bare_losses(trainer, trainer._cache_latents(inst, 1), trainer._cache_latents(cls, 2), cfg.steps).cpu()
        sync(args.device)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (both loops)")
    ap.add_argument("--8bit-adam", dest="adam8", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="bare/trainer pairs run in turn; the last pair is kept")
    args = ap.parse_args()
    size = 512 if args.full else 64
    g = torch.Generator().manual_seed(0)
    inst, cls = torch.rand(4, 3, size, size, generator=g), torch.rand(8, 3, size, size, generator=g)
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"| recipe | steps | trainer steps/s | bare loop steps/s | ratio | s per 1000 steps | peak memory |  ({where}, "
          f"{size} px, {'SD 2.1-base random' if args.full else 'tiny'}, mp={args.mixed_precision}, "
          f"ckpt={args.gradient_checkpointing}, compile={args.compile}, torch {torch.__version__})")
    print("|---|---|---|---|---|---|---|")
    for lora in (False, True):
        cfg = TrainConfig(steps=args.steps, lora=lora, resolution=size, mixed_precision=args.mixed_precision,
                          gradient_checkpointing=args.gradient_checkpointing,
                          optimizer="adamw8bit" if args.adam8 else "adamw",
                          latents="cached",  # the bare loop trains on cached latents
                          checkpoint_every=0, compile_unet=args.compile)
        rates = {}
        for kind in ("bare", "trainer") * args.repeat:  # alternated: the last of each is kept
            rates[kind] = args.steps / seconds(kind, args, cfg, inst, cls)
        if args.device.startswith("cuda"):
            mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (CUDA)"
        else:
            mem = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB max RSS"
        print(f"| {'LoRA r4 (UNet)' if lora else 'full (UNet + text encoder)'} + prior | {args.steps} | "
              f"{rates['trainer']:.2f} | {rates['bare']:.2f} | {rates['trainer'] / rates['bare']:.2f} | "
              f"{1000 / rates['trainer']:.0f} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
