"""The shipped mini stack: size, validation figures, loading through the real paths, doctor, demo."""

import json
from pathlib import Path

import torch
import yaml

from cloakbench.models.mini import world
from cloakbench.models.mini.stack import PARTS, SHIPPED, load_stack

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_weights_are_small_and_validated():
    files = [SHIPPED / f"{p}.safetensors" for p in PARTS]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    val = json.loads((SHIPPED / "manifest.json").read_text())["validation"]
    assert val["identity_auc_heldout"] >= 0.95
    assert val["clip_quality_auc"] > 0.8
    assert val["sr_psnr"] > val["sr_psnr_bicubic"]  # the SR model beats bicubic
    assert val["codesr_identity_cos"] >= 1 - val["identity_threshold"]  # CodeSR-mini keeps the identity
    # the base model draws the world: samples of the 60 calibration subjects' full captions (#16's targets: toy
    # >= 95 %, colour >= 90 %, shape >= 75 %, pattern >= 60 %; v5.2 measured 100 / 91.5 / 98.3 / 97.7 % on 480
    # samples, 8 per subject: at 2 per subject one sample was 0.7 points and machines differed by seven). The
    # evaluation and development subjects take part in no validation figure, threshold or ship rule (#31).
    assert val["unet_samples"] == len(world.calibration_subjects()) * 8 == 480
    assert val["unet_sample_toy_rate"] >= 0.95
    assert val["unet_sample_shape_acc"] >= 0.75 and val["unet_sample_pattern_acc"] >= 0.6
    assert val["unet_sample_colour_acc"] >= 0.90
    assert min(val[f"readout_{a}_acc_photos"] for a in ("colour", "shape", "pattern", "accent")) >= 0.95  # the read-out reads


def test_mini_loads_through_the_real_paths():
    from cloakbench.metrics import create_metric
    from cloakbench.models import load_model
    from cloakbench.models import load_clip
    from cloakbench.purify import create_purifier

    model = load_model("mini")
    assert type(model.unet).__name__ == "UNet2DConditionModel" and model.vae_scale_factor == 2
    # the parametrisation the UNet was trained with reaches training, protections and every sampler
    assert model.prediction_type == load_stack().manifest.get("prediction_type", "epsilon")
    assert dict(model.scheduler_config)["prediction_type"] == model.prediction_type
    x = world.photos(7, 2, seed=5).requires_grad_(True)
    loss = model.loss(x, "a photo of sks toy", generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and float(x.grad.abs().sum()) > 0
    assert load_clip("mini") is load_stack().clip
    refs, other = world.photos(7, 4, seed=6), world.photos(135, 4, seed=6)
    same = create_metric("ism[mini]")(x.detach(), refs).value
    diff = create_metric("ism[mini]")(other, refs).value
    assert same > diff  # the identity metric tells subjects apart
    assert create_metric("fdfr[mini]")(refs).value == 0.0
    q = create_metric("clip_iqac[mini]")
    noisy = (refs + 0.12 * torch.randn(refs.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert q(refs).value > q(noisy).value
    for name, opts in (("codesr-mini", {}), ("gridpure", {"model": "mini", "tile": 16, "stride": 8, "iterations": 1})):
        out = create_purifier(name, **opts)(refs)
        assert out.shape == refs.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_doctor_measures_identity_auc_and_quality():
    from cloakbench.doctor import mini_checks

    checks = {c.name: c for c in mini_checks()}
    assert checks["identity AUC (held-out subjects)"].ok, checks["identity AUC (held-out subjects)"].detail
    assert checks["quality score (mini CLIP good/bad)"].ok, checks["quality score (mini CLIP good/bad)"].detail


def test_demo_command_on_a_reduced_grid(tmp_path):
    """`cloakbench demo --config` end to end on 2 subjects, few steps: tables under 80 columns, gap and recovery
    with intervals, report with large crisp image grids, analysis, resume."""
    from typer.testing import CliRunner

    from cloakbench.cli import app

    cfg = yaml.safe_load((ROOT / "configs" / "mini-paper.yaml").read_text())
    assert len(cfg["data"]["world"]["subjects"]) >= 2  # the demo's intervals are over subjects
    assert set(cfg["data"]["world"]["subjects"]) <= set(world.EVALUATION)  # claims' pool: nothing fitted on them
    cfg["protections"] = [{"method": "none"}, {"method": "advdm", "steps": 2}]
    for r in cfg["recipes"]:
        r.update(steps=2, num_class_images=2, class_steps=2)
    cfg["sampling"].update(n=2, steps=2)
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), "--config", str(path)], terminal_width=80)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = " ".join(res.output.split())
    for word in ("verified", "ISM", "FDFR", "IQA", "gap", "CodeSR + CDL + QES", "latent misalignment"):
        assert word in text, word
    assert "…" not in res.output  # no header or cell cut to fit
    summary = json.loads((tmp_path / "run" / "demo.json").read_text())
    teams = {(r["protection"], r["red_team"]) for r in summary["rows"]}
    assert teams == {("none", "none"), ("advdm", "none"), ("advdm", "CodeSR + CDL + QES")}
    # every cell trained with a prior reports how often its samples are one of its class images (#31)
    assert all(r.get("prior[mini]") is not None and r.get("prior_refs[mini]") is not None for r in summary["rows"])
    assert summary["metrics"] == {"verified": "verified[mini]", "ism": "ism[mini]", "clip_iqac": "clip_iqac[mini]"}
    assert len(summary["identities"]) == 2
    gap = next(e for e in summary["effects"] if e["protection"] == "advdm" and e["red_team"] == "none")
    assert gap["verified"]["n"] == 2 and len(gap["verified"]["ci"]) == 2 and "same_sign" in gap["verified"]
    full = next(e for e in summary["effects"] if e["red_team"] == "CodeSR + CDL + QES")
    assert full["clip_iqac"] is not None and full["clip_iqac"]["n"] == 2
    assert "resolved" in full["verified"]  # the rule that prints a recovery or "not measured"
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'class="grid px"' in html and "width:96px" in html  # 32 px samples shown at 96 px, crisp
    assert (tmp_path / "run" / "analysis" / "misalignment.json").is_file()
    again = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), "--config", str(path)])
    assert again.exit_code == 0 and "ran 0" in again.output  # resumes: nothing redone


def test_demo_full_and_config_are_exclusive(tmp_path):
    from typer.testing import CliRunner

    from cloakbench.cli import app

    res = CliRunner().invoke(app, ["demo", "--full", "--config", "x.yaml", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "not both" in res.output
