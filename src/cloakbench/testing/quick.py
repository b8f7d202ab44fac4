"""Shrunk settings of every protection: each expensive part (surrogate training, rounds, pools, search)
cut to a step or two, so the whole family runs in seconds on a tiny model. One source for the test
suite (``tests/test_protect.py``) and the CPU benchmark (``benchmarks/protect.py``); the numbers a
shrunk run produces say nothing about a protection's strength, only that its code path works."""

from __future__ import annotations

from typing import Any

QUICK: dict[str, dict[str, Any]] = {
    "advdm": {}, "advdm-": {}, "mist": {}, "sds+": {}, "sds-": {}, "sdst": {}, "pid": {},
    "photoguard": {},
    "photoguard-e2e": {"grad_reps": 1, "denoise_steps": 2},
    "aspl": {"surrogate_steps": 1, "train_steps": 1, "pgd_steps": 2},
    "t-aspl": {"surrogate_steps": 1, "train_steps": 1, "pgd_steps": 2},
    "e-aspl": {"surrogate_steps": 1, "train_steps": 1, "pgd_steps": 2},
    "aspl-lora": {"surrogate_steps": 1, "pgd_steps": 2},
    "fsmg": {"surrogate_steps": 2},
    "metacloak": {"pool_train_steps": 2, "pool_interval": 1, "trials": 1, "rounds": 2, "pgd_per_round": 2,
                  "unroll_steps": 1},
    "caat": {},
    "simac": {"surrogate_steps": 1, "train_steps": 1, "pgd_steps": 2, "search_steps": 2, "keep": 900},
    "adaptive": {"purifier": "jpeg", "mode": "bpda"},
    "random-noise": {},
}
