"""Markdown tables of a mini grid's effects (benchmarks/README.md, "Mini world v5"): per subject, each
protection's gap (clean - protected) and each red-team's gain, then the means with 95 % bootstrap intervals
over subjects and the recovered shares (:func:`cloakbench.minilab.demo.summarize`).

    cloakbench demo --full --out RUN          # or: cloakbench bench configs/mini-eval.yaml --out RUN
    python benchmarks/mini_eval.py RUN configs/mini-eval.yaml [--metric verified]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cloakbench.bench import load_config
from cloakbench.minilab.demo import summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("config", type=Path)
    args = ap.parse_args()
    s = summarize(args.run, load_config(args.config))
    ids = s["identities"]
    metrics = list(s["metrics"])
    print(f"{len(ids)} subjects x {s['seeds']} seeds x {s['samples']} samples per cell\n")
    print("| protection | red team | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    for r in s["rows"]:
        print(f"| {r['protection']} | {r['red_team']} | "
              + " | ".join(f"{r[s['metrics'][m]]:.3f}" if r.get(s["metrics"][m]) is not None else "-" for m in metrics) + " |")
    for m in metrics:
        print(f"\n**{m}**: gap (clean - protected) and red-team gain (red - protected) per subject\n")
        print("| protection | red team | " + " | ".join(i.removeprefix("subject") for i in ids) + " | mean [95 % CI] | recovered [95 % CI] |")
        print("|---|---|" + "---|" * (len(ids) + 2))
        for e in s["effects"]:
            v = e.get(m)
            if not v:
                continue
            per = v.get("per_identity") or v.get("per_identity_gain")
            cells = " | ".join(f"{per[i]:+.2f}" if i in per else "-" for i in ids)
            if e["red_team"] == "none":
                mean = f"{v['mean']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], {v['same_sign']}/{v['n']} same sign"
                print(f"| {e['protection']} | gap | {cells} | {mean} | |")
            else:
                gain = sum(per.values()) / len(per)
                print(f"| {e['protection']} | {e['red_team']} | {cells} | {gain:+.3f} | "
                      f"{100 * v['mean']:.0f} % [{100 * v['ci'][0]:.0f}, {100 * v['ci'][1]:.0f}] |")


if __name__ == "__main__":
    main()
