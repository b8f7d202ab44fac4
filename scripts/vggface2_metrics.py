"""Identity and quality metrics on the real MetaCloak faces of shared/data (issue: metrics acceptance).

For each identity and each of its 4 photos, the clean and the MetaCloak-protected copy are scored
against the *other three* clean photos of the same identity (leave-one-out references).
Usage: python scripts/vggface2_metrics.py [DATA_DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cloakbench.images import read_images
from cloakbench.metrics import create_metric, mean_std, wilcoxon
from cloakbench.testing.shared_data import test_data_dir


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    root = Path(args.data) if args.data else test_data_dir()
    if root is None:
        sys.exit("shared data not found; pass DATA_DIR")
    metrics = {n: create_metric(n) for n in ("ism[dlib]", "fdfr[dlib]", "ims[dlib]", "brisque")}
    rows: dict[str, dict[str, list[float | None]]] = {}
    for ident in sorted((root / "faces/vggface2").iterdir()):
        clean = read_images(ident / "clean").images
        prot = read_images(ident / "protected-metacloak").images
        for i in range(clean.shape[0]):
            refs = torch.cat([clean[:i], clean[i + 1 :]])
            for kind, x in (("clean", clean[i : i + 1]), ("protected", prot[i : i + 1])):
                for name, m in metrics.items():
                    r = m(x, refs if m.needs_reference else None)
                    rows.setdefault(kind, {}).setdefault(r.name, []).append(r.per_image[0])
                    rows.setdefault(f"{kind}/{ident.name}", {}).setdefault(r.name, []).append(r.per_image[0])
    summary = {k: {m: mean_std(v)[:2] for m, v in d.items()} for k, d in rows.items()}
    tests = {m: wilcoxon(rows["clean"][m], rows["protected"][m]) for m in rows["clean"]
             if None not in rows["clean"][m] + rows["protected"][m]}
    print(f"{'set':22s} " + " ".join(f"{m:>16s}" for m in rows["clean"]))
    for k in sorted(summary, key=lambda s: (s.split("/")[-1], s)):
        print(f"{k:22s} " + " ".join(f"{mu:8.3f}±{sd:<7.3f}" if mu is not None else f"{'n/a':>16s}"
                                     for mu, sd in summary[k].values()))
    for m, t in tests.items():
        print(f"Wilcoxon clean vs protected, {m}: n={t['n']} p={t['p_value']:.4g}")
    out = {"per_image": rows, "summary": summary, "wilcoxon": tests}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
