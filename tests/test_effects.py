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
    from cloakbench.metrics.face_backends import FaceBackend

    class Fixed(FaceBackend):
        name, distance, threshold = "fixed", "cosine", 0.3

        def faces(self, image):
            from cloakbench.metrics.face_backends import Face

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
    # CodeSR + CDL sampled as DiffShortcut's infer() (the suffix, no negative prompt) and with QES (#31)
    assert {e["qes"] for e in evals if e["recipe"] == "dreambooth-cdl"} == {0, 1}
    protected = ["advdm@16/255", "aspl@16/255"]
    assert {(e["protection"], e["purification"], e["recipe"]) for e in evals} == {("none", "none", "dreambooth")} | {
        (p, pur, recipe) for p in protected
        for pur, recipe in (("none", "dreambooth"), ("codesr-mini", "dreambooth-cdl"), ("codesr-mini", "dreambooth-codesr"))}
    trains = [s for s in specs if s.kind == "train"]
    assert all("qes" not in s.params["recipe"] for s in trains)  # sampling settings are not training's
    # the grid's identity under hash schema 1 (bench/spec.py SCHEMA), pinned on configs/smoke.yaml: it changes only
    # with the schema (a run folder made under another is refused, never mixed; docs/ARCHITECTURE.md, Hashes)
    from cloakbench.bench.config import BenchConfig

    grid = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    smoke = identity(BenchConfig.model_validate(grid))
    assert (smoke["hash"], smoke["schema"]) == ("c145eba44d442d65", 1)
    assert smoke["labels"]["recipe"] == {"dreambooth": "14cca53c1cdb249d", "dreambooth-cdl": "48f55f8ce4738ee4"}
    grid["recipes"][0]["qes"] = None  # written out as unset: the same grid
    assert identity(BenchConfig.model_validate(grid))["hash"] == smoke["hash"]


def test_paired_ablation_and_resolved_by_hand():
    from cloakbench.bench.effects import ABLATIONS, paired, resolved

    table = {("advdm", "CodeSR"): [0.6, 0.6, 0.5, 0.5, 0.6, 0.6],  # per identity 0.6, 0.5, 0.6
             ("advdm", "CodeSR + CDL + QES"): [0.4, 0.4, 0.6, 0.6, 0.3, 0.3]}  # 0.4, 0.6, 0.3
    cells = per_identity(_rows(table), lambda r: r["team"])
    d = paired(cells, "m", "advdm", "CodeSR + CDL + QES", "CodeSR")  # Table 4's "full red team - CodeSR alone"
    assert d["mean"] == pytest.approx(-0.4 / 3) and d["same_sign"] == 2 and d["n"] == 3
    assert d["per_identity"] == {"id0": pytest.approx(-0.2), "id1": pytest.approx(0.1), "id2": pytest.approx(-0.3)}
    assert d["ci"][0] >= -0.3 - 1e-9 and d["ci"][1] <= 0.1 + 1e-9
    assert paired(cells, "m", "advdm", "CDL", "none") is None
    assert ("CodeSR + CDL + QES", "CodeSR") in ABLATIONS
    # a recovery is shown only when its interval is narrower than half the gap (tells 0 % from 50 %)
    assert resolved({"ci": [0.1, 0.55]}) and not resolved({"ci": [-0.5, 0.5]}) and not resolved({"ci": [0.0, 0.5]})
    assert not resolved({"ci": [float("nan"), float("nan")]}) and not resolved(None)


def test_class_image_share_counts_samples_that_are_a_prior_image(tmp_path):
    """A cell whose samples are its class images is a memorised prior (prior and copy shares 1); photos of a toy
    outside the class set are no copies; a cell trained without a prior has no row; the chance level is the same
    share for the subject's own photos. Real mini identity encoder."""
    import json

    import torch

    from cloakbench.bench.prior import MIN_COPY_SET, class_image_rows, copy_threshold
    from cloakbench.images import save_images
    from cloakbench.models.mini import world

    art = tmp_path / "run" / "artifacts"

    def stage(kind: str, h: str, spec: dict, images=None) -> None:
        folder = art / f"{kind}-{h[:16]}"
        folder.mkdir(parents=True)
        if images is not None:
            save_images(images, folder, [f"{i:03d}" for i in range(len(images))])
        (folder / "DONE.json").write_text(json.dumps({"spec": {"kind": kind, **spec}}))

    classes = torch.cat([world.photos(s, 1, seed=7) for s in world.calibration_subjects()])  # 60 toys, one each
    assert len(classes) >= MIN_COPY_SET and 0 < copy_threshold(classes) < 0.2 and copy_threshold(classes[:4]) is None
    outsider = world.photos(world.EVALUATION[0], 6, seed=8)
    stage("class_images", "c" * 64, {"params": {"seed": 0, "n": 60}, "inputs": {}}, classes)
    for name, samples, prior in (("memorised", classes[:6], "c" * 64), ("learned", outsider, "c" * 64),
                                 ("no-prior", classes[:6], None)):
        h = name.ljust(64, "0")
        stage("train", "t" + h, {"params": {}, "inputs": {"instances": "x", **({"classes": prior} if prior else {})}})
        stage("sample", "s" + h, {"params": {}, "inputs": {"model": "t" + h}}, samples)
        stage("evaluate", "e" + h, {"params": {}, "inputs": {"images": "s" + h},
                                    "labels": {"identity": "subject7", "protection": "none", "purification": "none",
                                               "recipe": name, "qes": 0, "seed": 0}})
    rows = {(r["recipe"], r["metric"]): r["value"] for r in class_image_rows(tmp_path / "run",
                                                                             references={"subject7": outsider[:4]})}
    assert {k[0] for k in rows} == {"memorised", "learned"}
    assert rows[("memorised", "prior[mini]")] == rows[("memorised", "copy[px]")] == 1.0
    assert rows[("learned", "copy[px]")] == 0.0  # drawing a toy is not copying a class image
    # the chance level: the subject's own photos score as its perfect samples would
    assert rows[("learned", "prior_refs[mini]")] is not None and rows[("learned", "prior[mini]")] < 1.0
