"""Where the real test images live: ``$CLOAKBENCH_TEST_DATA`` or ``../shared/data`` beside the project.

They are never copied into the repository; tests and ``cloakbench doctor`` look them up here.
"""

from __future__ import annotations

import os
from pathlib import Path


def test_data_dir() -> Path | None:
    """The shared data folder if found, else None (``$CLOAKBENCH_TEST_DATA`` wins when set)."""
    env = os.environ.get("CLOAKBENCH_TEST_DATA")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    roots = [Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents]
    for root in roots:
        cand = root / "shared" / "data"
        if (cand / "README.md").is_file():
            return cand
    return None
