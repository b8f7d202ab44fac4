"""Grids and comparisons the executor tests share (tests/test_bench.py, tests/test_reliability.py): the smoke grid
cut to one identity, and two run folders compared by rows and by trained-model bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloakbench.bench import load_config

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def smoke_grid(shared_data: Path) -> dict:
    """configs/smoke.yaml on the shared test faces."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data"]["root"] = str(shared_data / "faces/vggface2")
    return cfg


def one_identity_grid(smoke_cfg: dict, tmp_path: Path):
    """The smoke grid cut to one identity, one protection, none / jpeg and one recipe (6 result rows; 9 stages)."""
    smoke_cfg["data"]["identities"] = ["id1"]
    smoke_cfg["protections"] = smoke_cfg["protections"][1:]
    smoke_cfg["purifications"] = ["none", "jpeg"]
    smoke_cfg["recipes"] = smoke_cfg["recipes"][:1]
    path = tmp_path / "one-identity.yaml"
    path.write_text(yaml.safe_dump(smoke_cfg))
    return load_config(path)


def same_rows(a: Path, b: Path) -> None:
    """Run folders ``a`` and ``b`` hold the same 6 result rows, values equal to float rounding."""
    from cloakbench.bench.store import read_rows

    key = ("identity", "protection", "purification", "recipe", "qes", "seed", "metric", "spec_hash")
    first = {tuple(r[k] for k in key): r["value"] for r in read_rows(a / "results.sqlite")}
    second = {tuple(r[k] for k in key): r["value"] for r in read_rows(b / "results.sqlite")}
    assert first.keys() == second.keys() and len(first) == 2 * 3
    for k, v in first.items():
        assert (v is None and second[k] is None) or second[k] == pytest.approx(v, rel=1e-3, abs=1e-4), k


def model_bytes(run: Path) -> dict[str, bytes]:
    """Every trained model file of a run folder, by its path under ``artifacts/`` (stage folder included)."""
    art = run / "artifacts"
    return {str(p.relative_to(art)): p.read_bytes() for p in sorted(art.glob("train-*/**/*.safetensors"))}
