"""Seconds per image of every protection (not a timed test).

CPU: the tiny model at 128 px, 4 real faces (or random images without shared data), ``--steps``
updates with each method's expensive parts shrunk as in cloakbench.testing.quick (listed in the table).
GPU (``--full``): the full-size SD 2.1-base architecture with random weights at 512 px.

    python benchmarks/protect.py [--steps 4] [--methods aspl,advdm] [--full --device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from cloakbench.images import read_images
from cloakbench.models import build_tiny
from cloakbench.protect import create_protection, list_protections
from cloakbench.testing.quick import QUICK as FAST
from cloakbench.testing.shared_data import test_data_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--methods", default=",".join(list_protections()))
    ap.add_argument("--full", action="store_true", help="SD 2.1-base architecture, random weights, 512 px")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    size = 512 if args.full else 128
    data = test_data_dir()
    if data is not None:
        x = read_images(data / "faces/vggface2/id1/clean", size).images[: args.images]
    else:
        x = torch.rand(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    if args.full:
        from cloakbench.models.device import parse_dtype
        from cloakbench.testing.random_sd import build_sd21_base_random

        models = [build_sd21_base_random(device=args.device, dtype=parse_dtype(args.dtype))]
        device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()
    else:
        models = [build_tiny(0), build_tiny(5)]
        device_name = f"CPU ({torch.get_num_threads()} threads)"
    print(f"| method | steps | shrunk settings | s / image | s / update / image |  ({device_name}, {size} px, "
          f"{x.shape[0]} images, {'SD 2.1-base random' if args.full else 'tiny'})")
    print("|---|---|---|---|---|")
    for name in args.methods.split(","):
        prot = create_protection(name, steps=args.steps, **FAST[name])
        model = models if name == "e-aspl" else models[0]
        if name == "e-aspl" and len(models) < 2:
            print(f"| {name} | - | needs two models | - | - |")
            continue
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        prot(x, model, seed=0)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / x.shape[0]
        shrunk = ", ".join(f"{k}={v}" for k, v in FAST[name].items()) or "-"
        print(f"| {name} | {args.steps} | {shrunk} | {sec:.2f} | {sec / args.steps:.3f} |", flush=True)


if __name__ == "__main__":
    main()
