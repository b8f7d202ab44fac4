"""The claims table of benchmarks/README.md and the README's mini section: each claim of the paper that the
mini grids can test, the paper's figure, the mini figure on the evaluation subjects with its 95 % bootstrap
interval over subjects, and a verdict by the rule below (written 2026-12-07, before the #31 evaluation run).

    python benchmarks/mini_claims.py RUN configs/mini-eval.yaml configs/mini-baselines.yaml [configs/mini-eval-11.yaml]

Verdict rule. An *effect* claim (a difference the paper reports as positive) reproduces when the whole interval
is above 0, does not when the whole interval is at or below 0, and is "not resolved at this n" when it spans 0.
The *recovery* claim (the full red team recovers at least half of the protection's gap; the paper recovers all
of it) reproduces when the whole interval is at or above 50 %, does not when the whole interval is below 50 %,
and is not resolved otherwise. Identity is the verified share (``verified[mini]``), ISM beside it.
"""

from __future__ import annotations

from mini_eval import arguments  # benchmarks/ (this script's folder) is on sys.path

from cloakbench.minilab.demo import summarize

# (claim, the paper's figure, kind, team, baseline); kind "gap" | "paired" | "recovery"
CLAIMS = [
    ("the protection lowers identity (clean - protected)", "ASPL: IMS -0.13 -> -0.67 (Table 1)", "gap", None, None),
    ("CodeSR alone adds identity (CodeSR - none)", "ASPL: IMS +0.056 (Table 4)", "paired", "CodeSR", "none"),
    ("CDL alone adds identity (CDL - none)", "ASPL: IMS +0.431 (Table 4)", "paired", "CDL", "none"),
    ("CDL + QES adds identity (CDL + QES - none)", "not reported", "paired", "CDL + QES", "none"),
    ("CDL is stronger than CodeSR (CDL - CodeSR)", "ASPL: IMS +0.375 (Table 4)", "paired", "CDL", "CodeSR"),
    ("CDL adds to CodeSR (CodeSR + CDL - CodeSR)", "not reported", "paired", "CodeSR + CDL", "CodeSR"),
    ("the full red team beats CodeSR alone (CodeSR + CDL + QES - CodeSR)", "ASPL: IMS +0.471 (Table 4)", "paired",
     "CodeSR + CDL + QES", "CodeSR"),
    ("the full red team recovers >= half of the gap", "ASPL: IMS 0.09 vs clean -0.13: all of it (Table 1)", "recovery",
     "CodeSR + CDL + QES", None),
]


def verdict(kind: str, v: dict | None) -> str:
    if not v or v["ci"][0] != v["ci"][0]:  # missing or NaN
        return "not measured"
    lo, hi = v["ci"]
    if kind == "recovery":
        above, below = lo >= 0.5, hi < 0.5
    else:
        above, below = lo > 0, hi <= 0
    return "reproduces" if above else "does not reproduce" if below else "not resolved at this n"


def fmt(kind: str, v: dict | None) -> str:
    if not v:
        return "-"
    if kind == "recovery":
        return f"{100 * v['mean']:.0f} % [{100 * v['ci'][0]:.0f}, {100 * v['ci'][1]:.0f}]"
    return f"{v['mean']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]" + (f", {v['same_sign']}/{v['n']}" if "same_sign" in v else "")


def main() -> None:
    args, cfg = arguments(__doc__.splitlines()[0])
    s = summarize([args.run, *args.also], cfg)
    protections = sorted({e["protection"] for e in s["effects"]})
    effects = {(e["protection"], e["red_team"]): e for e in s["effects"]}
    pairs = {(a["protection"], a["team"], a["baseline"]): a for a in s["ablations"]}
    print(f"{len(s['identities'])} evaluation subjects x {s['seeds']} seeds x {s['samples']} samples per cell; "
          "verified share (ISM beside it), 95 % bootstrap interval over subjects, subjects with the mean's sign\n")
    print("| claim | paper | protection | mini: verified | mini: ISM | verdict (verified) |\n|---|---|---|---|---|---|")
    for claim, paper, kind, team, base in CLAIMS:
        for p in protections:
            if kind == "gap":
                row = effects.get((p, "none"), {})
            elif kind == "recovery":
                row = effects.get((p, team), {})
            else:
                row = pairs.get((p, team, base), {})
            v, ism = row.get("verified"), row.get("ism")
            if v is None and ism is None:
                continue
            print(f"| {claim} | {paper} | {p} | {fmt(kind, v)} | {fmt(kind, ism)} | {verdict(kind, v)} |")


if __name__ == "__main__":
    main()
