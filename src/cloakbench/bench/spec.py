"""Stage specs: what a stage computes, named by the hash of its canonical JSON.

A spec holds the stage kind, its parameters, and the hashes of its inputs (upstream specs or files
by content). The sha256 of the canonical JSON (sorted keys, no whitespace, plus the cloakbench
version) names the artifact folder, so identical work is shared and finished work is found again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def files_hash(paths: list[Path]) -> str:
    """Content hash of files (names and bytes), independent of where they live."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@dataclass
class Spec:
    """One node of the run's DAG."""

    kind: str  # protect | purify | class_images | train | sample | evaluate
    params: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # role -> spec hash or "files:<sha>"
    labels: dict[str, Any] = field(default_factory=dict)  # cell coordinates, not hashed

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical({"kind": self.kind, "params": self.params, "inputs": self.inputs,
                                         "version": __version__}).encode()).hexdigest()

    @property
    def folder_name(self) -> str:
        return f"{self.kind}-{self.hash[:16]}"
