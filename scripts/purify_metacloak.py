"""How much of MetaCloak's real protection each offline purifier removes (issue: purification acceptance).

On shared/data/faces/vggface2/*/protected-metacloak (MetaCloak, L-inf 11/255, SD 2.1-base, made by its
authors), per purifier: (i) remaining perturbation: Pearson correlation between (purified - clean)
and (protected - clean), both at 512 px (purifier outputs resized back when needed); (ii) identity
kept: cosine of dlib embeddings of purified vs clean; (iii) seconds per image; plus PSNR to clean.
Usage: python scripts/purify_metacloak.py [--purifiers jpeg,blur,realesrgan] [--markdown]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from cloakbench.images import read_images, to_uint8
from cloakbench.metrics.face_backends import cosine, create_face_backend
from cloakbench.metrics.fidelity import psnr
from cloakbench.purify import create_purifier
from cloakbench.testing.shared_data import test_data_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--purifiers", default="none,jpeg,blur,noise,tvm,realesrgan,codesr-fast")
    ap.add_argument("--codeformer", default=None, help="CodeFormer checkpoint for codesr-fast (default: weights manager)")
    args = ap.parse_args()
    root = test_data_dir()
    if root is None:
        sys.exit("shared data not found")
    clean = torch.cat([read_images(d / "clean").images for d in sorted((root / "faces/vggface2").iterdir())])
    prot = torch.cat([read_images(d / "protected-metacloak").images for d in sorted((root / "faces/vggface2").iterdir())])
    face = create_face_backend("dlib")
    clean_emb = [face.faces(a) for a in to_uint8(clean)]
    print("| purifier | perturbation kept (corr) | identity cos vs clean (dlib) | faces found | PSNR vs clean (dB) | s / image |")
    print("|---|---|---|---|---|---|")
    for name in args.purifiers.split(","):
        if name == "none":
            out, sec = prot, 0.0
        else:
            try:
                kw = {"weights": args.codeformer} if name.startswith("codesr") and args.codeformer else {}
                p = create_purifier(name, **kw)
            except (FileNotFoundError, ImportError, OSError) as exc:
                print(f"| {name} | unavailable: {str(exc).splitlines()[0][:90]} | | | | |")
                continue
            out = p(prot)
            sec = p.stats["seconds_per_image"]
        if out.shape[-2:] != clean.shape[-2:]:
            out = F.interpolate(out, size=clean.shape[-2:], mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        corr = [float(np.corrcoef((o - c).flatten().numpy(), (p_ - c).flatten().numpy())[0, 1])
                for o, p_, c in zip(out, prot, clean)]
        cos, found = [], 0
        for a, ce in zip(to_uint8(out), clean_emb):
            f = face.faces(a)
            if f and ce:
                cos.append(cosine(f[0].embedding, ce[0].embedding))
                found += 1
        print(f"| {name} | {np.mean(corr):.3f} ± {np.std(corr):.3f} | {np.mean(cos):.4f} | {found}/{len(out)} | "
              f"{float(psnr(out, clean).mean()):.2f} | {sec:.2f} |", flush=True)


if __name__ == "__main__":
    main()
