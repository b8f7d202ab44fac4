"""Stage specs: what a stage computes, named by the hash of its canonical JSON.

A spec holds the stage kind, its parameters, and the hashes of its inputs (upstream specs or files
by content). The sha256 of the canonical JSON (sorted keys, no whitespace, plus the cloakbench
version and the hash schema) names the artifact folder, so identical work is shared and finished work is found
again. Every hash of a run folder (stage folders, the grid and its labels in ``grid.json``) is :func:`digest` of a
canonical view, computed here and nowhere else.

``SCHEMA``: the version of those views. A run folder records it in ``grid.json``; a folder written under another
schema (or before schemas existed: no ``schema`` key, cloakbench before 2026-12-08) names its stages by other
hashes, so its finished work cannot be found again and it is refused with the way to go on
(:func:`~cloakbench.bench.runfolder.claim`). There is no translation of old hashes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__


SCHEMA = 1  # 1: every recipe key explicit (RecipeSpec.training), entries hashed whole (2026-12-08)


def canonical(obj: Any) -> str:
    """The canonical JSON of ``obj``: sorted keys, no whitespace (what every hash of a run folder reads)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    """The sha256 (hex) of ``obj``'s canonical JSON under this schema."""
    return hashlib.sha256(canonical({"schema": SCHEMA, "of": obj}).encode()).hexdigest()


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
        return digest({"kind": self.kind, "params": self.params, "inputs": self.inputs, "version": __version__})

    @property
    def folder_name(self) -> str:
        return f"{self.kind}-{self.hash[:16]}"
