"""The stage layer is the one path: the CLI and the bench runner write the same bytes for the same work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cloakbench import stages
from cloakbench.bench import Runner, load_config
from cloakbench.cli import app
from cloakbench.purify import Purifier

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture()
def runner(shared_data, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data"]["root"] = str(shared_data / "faces/vggface2")
    cfg["data"]["identities"] = ["id1"]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return Runner(load_config(tmp_path / "cfg.yaml"), tmp_path / "run", device="cpu")


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.mark.data
def test_cli_and_runner_protect_and_purify_write_the_same_bytes(runner, tmp_path):
    protect = next(s for s in runner.specs if s.kind == "protect" and s.params["method"] == "advdm")
    purify = next(s for s in runner.specs if s.kind == "purify" and s.inputs["images"] == protect.hash
                  and s.params["method"] == "jpeg")
    runner.run_stage(protect)
    runner.run_stage(purify)
    src = tmp_path / "in"
    src.mkdir()
    for f in runner._input_paths(protect.inputs["images"]):
        shutil.copy(f, src / f.name)
    cli = CliRunner()
    res = cli.invoke(app, ["protect", str(src), str(tmp_path / "prot"), "-m", "advdm", "--model", "tiny",
                           "--eps", "8/255", "--steps", "2", "--resolution", "64", "--seed", "0"])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["purify", str(tmp_path / "prot"), str(tmp_path / "pur"), "-m", "jpeg",
                           "--resolution", "64", "--seed", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ran = _pngs(runner.folder(protect))
    assert len(ran) == 2 and ran == _pngs(tmp_path / "prot")
    assert _pngs(runner.folder(purify)) == _pngs(tmp_path / "pur")
    # one record: budget measured on the saved PNGs, fidelity against the clean crops, by name
    a = json.loads((runner.folder(protect) / "protection.json").read_text())
    b = json.loads((tmp_path / "prot" / "protection.json").read_text())
    assert a["measured"] == b["measured"] and 1 <= a["measured"]["linf_max_255"] <= 8
    fa = json.loads((runner.folder(purify) / "DONE.json").read_text())["outputs"]["fidelity"]
    fb = json.loads((tmp_path / "pur" / "purification.json").read_text())["fidelity"]
    assert fa["psnr"] > 20 and fb["psnr"] > 20


class Upscale2(Purifier):
    name = "test-upscale2"

    def purify(self, images):
        return torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")


def test_purified_output_has_the_input_size_in_every_path(tmp_path):
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    p = Upscale2()
    same = p.purify_same_size(x)
    back = torch.nn.functional.interpolate(p(x), size=(24, 24), mode="bicubic", antialias=True, align_corners=False)
    assert same.shape == x.shape and torch.equal(same, back.clamp(0, 1))  # antialiased bicubic back to the input size
    y = x.clone().requires_grad_(True)
    p.bpda(y).sum().backward()  # BPDA: the same resize forward, the identity backward
    assert torch.equal(y.grad, torch.ones_like(x))


def test_sample_config_is_one_rule(tmp_path):
    from cloakbench.personalize import CDLPolicy

    suffix = ", without bhj noisy pattern"
    plain, qes = stages.sample_config(), stages.sample_config(CDLPolicy(enabled=True), qes=True)
    # the reference's default: the suffix on every prompt of every model (DiffShortcut train_dreambooth.py:514)
    assert (plain.steps, plain.negative_prompt, plain.suffix) == (50, "", suffix)
    assert (qes.steps, qes.negative_prompt, qes.suffix) == (100, "noisy, lowres, artifact, pattern", suffix)
    # "cdl+qes": only a CDL-trained model sampled with QES (cloakbench before #31); "never"; bools stand for them
    for cdl, q, want in ((False, True, ""), (True, False, ""), (True, True, suffix)):
        assert stages.sample_config(CDLPolicy(enabled=cdl), qes=q, suffix="cdl+qes").suffix == want
    assert stages.sample_config(qes=True, suffix="never").suffix == stages.sample_config(suffix=False).suffix == ""
    assert stages.sample_config(suffix=True).suffix == suffix
    with pytest.raises(ValueError, match="suffix must be one of always, cdl\\+qes, never"):
        stages.sample_config(suffix="sometimes")


@pytest.mark.data
def test_setabc_layout_routes_each_set_to_its_stage(shared_data, tmp_path):
    """Anti-DreamBooth's layout end to end: set_A trains the protector's surrogates (with the prior's class
    images), set_B is protected and fine-tuned on, set_C is the evaluation's reference set."""
    faces = shared_data / "faces/vggface2"
    root = tmp_path / "data" / "id1"
    clean = sorted((faces / "id1/clean").glob("*.png"))
    for name, files in (("set_A", clean[:2]), ("set_B", clean[2:4]), ("set_C", sorted((faces / "id3/clean").glob("*.png"))[:2])):
        (root / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / name / f.name)
    cfg = {"name": "abc", "model": "tiny", "resolution": 64, "data": {"root": str(tmp_path / "data"), "layout": "setabc"},
           "protections": [{"method": "aspl", "eps": "8/255", "steps": 2,
                            "options": {"surrogate_steps": 1, "train_steps": 1, "pgd_steps": 2}}],
           "recipes": [{"name": "db", "steps": 2, "num_class_images": 2, "class_steps": 2}],
           "sampling": {"n": 1, "steps": 2, "prompts": ["a photo of sks person"]}, "metrics": ["brisque"]}
    (tmp_path / "abc.yaml").write_text(yaml.safe_dump(cfg))
    run = Runner(load_config(tmp_path / "abc.yaml"), tmp_path / "run", device="cpu")
    protect = next(s for s in run.specs if s.kind == "protect")
    classes = run.by_hash[protect.inputs["classes"]]
    train = next(s for s in run.specs if s.kind == "train")
    assert train.inputs["classes"] == classes.hash  # one class-image set for protector and mimic
    run.run_stage(classes)
    run.run_stage(protect)
    rec = json.loads((run.folder(protect) / "protection.json").read_text())
    names = lambda paths: sorted((Path(p).parent.name, Path(p).name) for p in paths)  # noqa: E731
    assert names(rec["sources"]) == names(root / "set_B" / f.name for f in clean[2:4])
    assert names(rec["surrogate_images"]) == names(root / "set_A" / f.name for f in clean[:2])
    assert rec["surrogate_images_used"] is True and rec["class_images"] == 2
    assert rec["config"]["clean_images"] == "tensor [2, 3, 64, 64]"
    evaluate = next(s for s in run.specs if s.kind == "evaluate")
    assert [p.parent.name for p in run.files[evaluate.inputs["references"]]] == ["set_C", "set_C"]
