"""Seconds per 512 px image of every purifier, on the same image, in one run (not a timed test).

Full-size architectures with random weights stand in for missing real weights (speed does not depend
on weight values): CodeFormer (94 M), the SD x4 upscaler, a 256 px pixel UNet (the CelebA-HQ DDPM
layout, ~114 M) for DiffPure / GrIDPure / DDSPure, and the SD 2.1-base layout for the latent methods.
Methods with long chains are timed on a shortened chain and extrapolated linearly in the number of
network evaluations (marked "extrapolated"); the fixed part (face detection, VAE, resizing) is
measured. Ratios are against GrIDPure (paper settings: 10 steps x 20 iterations x 10 tiles).

    python benchmarks/purify.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from cloakbench.images import read_images
from cloakbench.purify import create_purifier
from cloakbench.testing.shared_data import test_data_dir


def timed(p, x, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    p(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def pixel_unet(device):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                       down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)
    return unet.to(device).eval().requires_grad_(False), DDPMScheduler(num_train_timesteps=1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = args.device
    data = test_data_dir()
    x = (read_images(data / "faces/vggface2/id1/protected-metacloak", 512).images[:1] if data is not None
         else torch.rand(1, 3, 512, 512))
    rows: list[tuple[str, float, str]] = []

    for name, kw in (("jpeg", {}), ("blur", {}), ("noise", {}), ("tvm", {}), ("realesrgan", {})):
        rows.append((name, timed(create_purifier(name), x, dev), "measured"))

    from spandrel_extra_arches.architectures.CodeFormer.__arch.codeformer import CodeFormer

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = Path(tmp) / "codeformer-full-random.pth"
        torch.save({"params_ema": CodeFormer().state_dict()}, ckpt)  # the released architecture, 94 M
        cf = create_purifier("codeformer", weights=str(ckpt), device=dev)
        t_cf = timed(cf, x, dev)
        rows.append(("codeformer (stage 1)", t_cf, "measured"))
        rows.append(("codesr-fast (codeformer + realesrgan)", t_cf + rows[4][1], "measured stages"))

        from cloakbench.purify.sd_upscaler import build_upscaler

        up_dir = Path(tmp) / "upscaler"
        build_upscaler(tiny=False).save_pretrained(up_dir)
        y = torch.rand(1, 3, 1024, 1024)
        t2 = timed(create_purifier("sd-upscaler", model=str(up_dir), steps=2, device=dev), y, dev)
        t4 = timed(create_purifier("sd-upscaler", model=str(up_dir), steps=4, device=dev), y, dev)
        per = (t4 - t2) / 2
        sr75 = t2 + 73 * per
        rows.append(("sd-upscaler (75 steps)", sr75, "extrapolated"))
        rows.append(("codesr (paper: codeformer + sd-upscaler)", t_cf + sr75, "extrapolated"))

    pm = pixel_unet(dev)
    g1 = timed(create_purifier("gridpure", pixel_model=pm, steps=1, t_star=10, iterations=1), x, dev)
    g2 = timed(create_purifier("gridpure", pixel_model=pm, steps=2, t_star=10, iterations=1), x, dev)
    per_pass = g2 - g1  # one step over the 10 tiles
    grid = 20 * (g1 + 9 * per_pass)
    rows.append(("gridpure (10 steps x 20 it.)", grid, "extrapolated"))
    d1 = timed(create_purifier("pixel-diffpure", pixel_model=pm, steps=1, t_star=100), x, dev)
    d2 = timed(create_purifier("pixel-diffpure", pixel_model=pm, steps=2, t_star=100), x, dev)
    rows.append(("pixel-diffpure (t=100, 100 steps)", d1 + 99 * (d2 - d1), "extrapolated"))
    rows.append(("ddspure", timed(create_purifier("ddspure", pixel_model=pm), x, dev), "measured"))

    from cloakbench.testing.random_sd import build_sd21_base_random

    sd = build_sd21_base_random(device=dev)
    l1 = timed(create_purifier("latent-diffpure", model=sd, t_star=300, steps=2), x, dev)
    l2 = timed(create_purifier("latent-diffpure", model=sd, t_star=300, steps=4), x, dev)
    rows.append(("latent-diffpure (301 DDPM steps, CFG)", l1 + 299 * (l2 - l1) / 2, "extrapolated"))
    i1 = timed(create_purifier("impress", model=sd, iters=1, perceptual="ssim"), x, dev)
    i2 = timed(create_purifier("impress", model=sd, iters=2, perceptual="ssim"), x, dev)
    rows.append(("impress (3000 iterations)", i1 + 2999 * (i2 - i1), "extrapolated"))

    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"| purifier | s / 512 px image | vs GrIDPure | how |  ({name}, random weights of the full-size architectures)")
    print("|---|---|---|---|")
    for n, s, how in rows:
        print(f"| {n} | {s:.2f} | {grid / s:.1f}x faster | {how} |" if s < grid else f"| {n} | {s:.2f} | {s / grid:.1f}x slower | {how} |")


if __name__ == "__main__":
    main()
