"""Gap and recovery with bootstrap intervals, the verification-rate metric, and per-recipe QES in a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cloakbench.bench.effects import bootstrap, gap, per_identity, recovery, team_name

ROOT = Path(__file__).resolve().parents[1]


def _rows(table: dict[tuple[str, str], list[float]], metric: str = "m") -> list[dict]:
    """Rows of 3 identities x 2 seeds; ``table[(protection, team)]`` gives each identity's two seed values."""
    rows = []
    for (prot, team), values in table.items():
        for k, v in enumerate(values):
            rows.append({"protection": prot, "team": team, "metric": metric, "identity": f"id{k // 2}", "value": v})
    return rows


def test_gap_and_recovery_by_hand():
    table = {("none", "none"): [0.9, 0.7, 0.8, 0.8, 0.6, 0.6],  # per identity: 0.8, 0.8, 0.6
             ("advdm", "none"): [0.2, 0.2, 0.5, 0.3, 0.7, 0.7],  # 0.2, 0.4, 0.7 -> gaps 0.6, 0.4, -0.1
             ("advdm", "CodeSR"): [0.6, 0.6, 0.5, 0.5, 0.6, 0.6]}  # 0.6, 0.5, 0.6 -> gains 0.4, 0.1, -0.1
    cells = per_identity(_rows(table) + [{"protection": "x", "team": "y", "metric": "m", "identity": "id0", "value": None}],
                         lambda r: r["team"])
    assert ("x", "y") not in cells  # rows without a value are left out
    g = gap(cells, "m", "advdm")
    assert g["mean"] == pytest.approx(0.3) and g["n"] == 3 and g["same_sign"] == 2
    assert g["per_identity"] == {"id0": pytest.approx(0.6), "id1": pytest.approx(0.4), "id2": pytest.approx(-0.1)}
    assert g["ci"][0] <= g["mean"] <= g["ci"][1] and g["ci"][0] >= -0.1 - 1e-9 and g["ci"][1] <= 0.6 + 1e-9
    r = recovery(cells, "m", "advdm", "CodeSR")
    assert r["mean"] == pytest.approx(0.4 / 0.9)  # mean gain 0.4/3 over mean gap 0.9/3: a ratio of means
    assert recovery(cells, "m", "advdm", "JPEG") is None and gap(cells, "m", "aspl") is None


def test_bootstrap_interval_is_seeded_and_covers_the_spread():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    a, b = bootstrap(lambda i: float(x[i].mean()), 4), bootstrap(lambda i: float(x[i].mean()), 4)
    assert a == b and 1.0 <= a[0] < 2.5 < a[1] <= 4.0
    assert bootstrap(lambda i: float(np.full(4, 2.0)[i].mean()), 4) == (2.0, 2.0)


def test_team_names():
    assert team_name("none", False, False) == "none"
    assert team_name("codesr-mini", True, True) == "CodeSR + CDL + QES"
    assert team_name("jpeg", False, False) == "JPEG" and team_name("none", True, False) == "CDL"
    assert team_name("noisy-upscaler", False, True) == "noisy-upscaler + QES"


def _fixed_backend(table):
    """A face backend with fixed embeddings per image (keyed by the image's mean value, 0-255)."""
    from cloakbench.metrics.faces import FaceBackend

    class Fixed(FaceBackend):
        name, distance, threshold = "fixed", "cosine", 0.3

        def faces(self, image):
            from cloakbench.metrics.faces import Face

            emb = table.get(int(round(image.mean())))
            return [] if emb is None else [Face((0, 0, 1, 1), 1.0, np.asarray(emb, dtype=float))]

    return Fixed()


def test_verified_rate_thresholds_the_mean_distance_and_counts_missing_faces():
    import torch

    from cloakbench.metrics.identity import Verified

    ang = lambda deg: [np.cos(np.radians(deg)), np.sin(np.radians(deg))]  # noqa: E731
    # references at 0 and 20 degrees; images at 10 (mean distance 1 - cos 10 = 0.015: verified), at 60 (mean
    # 1 - (cos 60 + cos 40) / 2 = 0.367 > 0.3: not verified), at 40 (0.234 <= 0.3: verified) and one without a face
    table = {10: ang(0), 20: ang(20), 30: ang(10), 40: ang(60), 50: ang(40)}
    img = lambda v: torch.full((1, 3, 4, 4), v / 255)  # noqa: E731
    m = Verified(backend=_fixed_backend(table))
    res = m(torch.cat([img(30), img(40), img(50), img(60)]), torch.cat([img(10), img(20)]))
    assert res.value == pytest.approx(0.5) and res.n_no_face == 1
    assert res.per_image == [1.0, 0.0, 1.0, 0.0]


def test_recipe_qes_samples_only_that_recipe_and_keeps_old_grid_hashes(tmp_path):
    from cloakbench.bench import load_config
    from cloakbench.bench.runfolder import identity
    from cloakbench.bench.runner import plan

    cfg = yaml.safe_load((ROOT / "configs" / "mini-eval.yaml").read_text())
    cfg["data"]["world"]["subjects"] = [7]  # renders 8 photos of one subject
    cfg["seeds"] = [0]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(cfg))
    specs, _ = plan(load_config(path))
    evals = [s.labels for s in specs if s.kind == "evaluate"]
    assert {e["qes"] for e in evals if e["recipe"] == "dreambooth"} == {0}
    assert {e["qes"] for e in evals if e["recipe"] == "dreambooth-cdl"} == {1}
    protected = ["advdm@16/255", "aspl@16/255"]
    assert {(e["protection"], e["purification"], e["recipe"]) for e in evals} == {("none", "none", "dreambooth")} | {
        (p, pur, recipe) for p in protected
        for pur, recipe in (("none", "dreambooth"), ("codesr-mini", "dreambooth-cdl"), ("codesr-mini", "dreambooth-codesr"))}
    trains = [s for s in specs if s.kind == "train"]
    assert all("qes" not in s.params["recipe"] for s in trains)  # sampling settings are not training's
    # a grid without the field hashes as before the field existed (measured on configs/smoke.yaml at 9464668)
    from cloakbench.bench.config import BenchConfig

    grid = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    for r in grid["recipes"]:  # the training from before issue #17's keys (their defaults are other training)
        r.update(latents="cached", mixed_precision="no")
    smoke = identity(BenchConfig.model_validate(grid))
    assert smoke["hash"] == "68a979becc257c28"
    assert smoke["labels"]["recipe"] == {"dreambooth": "8a5941dbfd0ff0d9", "dreambooth-cdl": "f2a4ef65fb0ecb70"}
