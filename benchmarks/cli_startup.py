"""Seconds a user waits for ``--help`` (issue 36: under a second; not a timed test): each command run ``--repeat``
times in a fresh interpreter, as the installed ``cloakbench`` script runs it; the median, and whether torch was
imported on the way.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["--help"], ["protect", "--help"], ["bench", "--help"], ["train", "--help"], ["analyze", "m4", "--help"],
            ["mini", "train", "--help"], ["list", "--help"]]
PROBE = ("import sys, runpy; sys.argv = ['cloakbench', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('cloakbench.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "sys.stderr.write('torch' if 'torch' in sys.modules else 'no torch')")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print("| command | median s | imports torch |\n|---|---|---|")
    for cmd in COMMANDS:
        times, torch = [], ""
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            torch = out.stderr.strip().splitlines()[-1]
        print(f"| cloakbench {' '.join(cmd)} | {statistics.median(times):.2f} | {torch} |")


if __name__ == "__main__":
    main()
