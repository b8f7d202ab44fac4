"""The shortcut analyses as commands: M3 (random-noise control, through the bench grid) and M4 (concept
extraction from a trained model), on the tiny model and the shipped mini stack."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from cloakbench.cli import app
from cloakbench.errors import InputError
from cloakbench.images import read_images, save_images

EPS = 11 / 255  # the paper's budget r (docs/PAPER.md §8)


@pytest.fixture()
def photos(tmp_path):
    """Two 64 x 64 photos spanning the full 8-bit range (some pixels at 0 and 255, where the clip bites)."""
    rng = np.random.default_rng(0)
    for i in range(2):
        arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        arr[:4] = 0
        arr[-4:] = 255
        Image.fromarray(arr).save(tmp_path / f"p{i}.png")
    return tmp_path


def _protect(photos, out, method, tiny_model, **options):
    from cloakbench import stages

    steps = options.pop("steps", None)
    record = stages.protect(sorted(photos.glob("p*.png")), out, method=method, surrogates=[tiny_model], eps=EPS,
                            steps=steps, options=options, resolution=64, seed=0)
    clean = read_images(out / "clean", None, min_size=None).images
    adv = read_images(sorted(out.glob("*.png")), None, min_size=None).images
    return record, torch.round((adv.double() - clean.double()) * 255), torch.round(clean.double() * 255)


@pytest.mark.parametrize("distribution", ["sign", "uniform"])
def test_random_noise_is_exactly_the_budget_on_the_saved_pngs(photos, tiny_model, tmp_path, distribution):
    record, d, clean = _protect(photos, tmp_path / distribution, "random-noise", tiny_model, distribution=distribution)
    assert record["measured"]["linf_max_255"] == 11.0 and d.abs().max() == 11
    inside = (clean >= 11) & (clean <= 244)  # no clip at 0 / 255
    if distribution == "sign":
        assert (d[inside].abs() == 11).all()
        assert abs(float((d[inside] > 0).double().mean()) - 0.5) < 0.02
    else:
        values, counts = d[inside].unique(return_counts=True)
        assert values.tolist() == list(range(-11, 12))  # every level of [-k, k], none beyond
        assert counts.min() > 0.7 * counts.double().mean()  # roughly uniform
    assert (d[clean == 0] >= 0).all() and (d[clean == 255] <= 0).all()  # clipped into [0, 255], never wrapped


def test_random_noise_differs_from_the_protection_and_is_seeded(photos, tiny_model, tmp_path):
    from cloakbench.protect import create_protection

    _, d_rand, _ = _protect(photos, tmp_path / "rand", "random-noise", tiny_model)
    _, d_adv, _ = _protect(photos, tmp_path / "adv", "advdm", tiny_model, steps=2)
    assert d_adv.abs().max() <= 11
    assert float((d_rand == d_adv).double().mean()) < 0.3  # independent signs agree on about half the ±11 pixels at most
    x = read_images(sorted(photos.glob("p*.png")), 64).images
    rn = create_protection("random-noise", eps=EPS)
    assert torch.equal(rn(x, tiny_model, seed=1), rn(x, tiny_model, seed=1))
    assert not torch.equal(rn(x, tiny_model, seed=1), rn(x, tiny_model, seed=2))
    with pytest.raises(ValueError, match="distribution"):
        create_protection("random-noise", distribution="gaussian")
    with pytest.raises(ValueError, match="L-inf"):
        create_protection("random-noise", norm="l2", eps=0.5)
    with pytest.raises(ValueError, match="8-bit level"):
        create_protection("random-noise", eps=0.5 / 255)(x, tiny_model)


def _write_ism(db, cells):
    """Results rows of metric ``ism`` for ``(protection, purification, identity, seed, value)`` cells."""
    from cloakbench.bench.store import write_rows

    write_rows(db, [{"spec_hash": f"h{i}", "metric": "ism", "value": v, "n": 4, "n_no_face": 0, "identity": ident,
                     "protection": prot, "purification": pur, "recipe": "db", "qes": 0, "seed": seed, "details": {},
                     "provenance": {}} for i, (prot, pur, ident, seed, v) in enumerate(cells)])


def test_m3_table_by_hand(tmp_path):
    """Means over identities with seeds averaged first, gaps clean - cell, red-team rows left out."""
    from cloakbench.analysis import random_noise_control

    cells = [("none", "none", "a", 0, 0.6), ("none", "none", "a", 1, 0.8), ("none", "none", "b", 0, 0.5),
             ("advdm@11/255", "none", "a", 0, 0.1), ("advdm@11/255", "none", "b", 0, 0.3),
             ("random-noise@11/255", "none", "a", 0, 0.65), ("random-noise@11/255", "none", "b", 0, 0.45),
             ("advdm@11/255", "jpeg", "a", 0, 0.9), ("advdm@11/255", "jpeg", "b", 0, 0.9)]
    _write_ism(tmp_path / "results.sqlite", cells)
    s = random_noise_control(tmp_path, out=tmp_path / "ana")
    t = s["tables"][0]
    assert s["labels"] == {"clean": "none", "protections": ["advdm@11/255"], "random": ["random-noise@11/255"]}
    assert t["rows"]["none"]["ism"] == pytest.approx((0.7 + 0.5) / 2)
    assert t["rows"]["advdm@11/255"]["ism"] == pytest.approx(0.2)  # jpeg rows (0.9) left out
    assert t["gaps"]["advdm@11/255"]["ism"]["mean"] == pytest.approx(0.4)
    assert t["gaps"]["random-noise@11/255"]["ism"]["per_identity"] == {"a": pytest.approx(0.05), "b": pytest.approx(0.05)}
    assert json.loads((tmp_path / "ana/m3.json").read_text())["tables"][0]["rows"] == t["rows"]
    (tmp_path / "no-random").mkdir()
    _write_ism(tmp_path / "no-random/results.sqlite", [c for c in cells if not c[0].startswith("random")])
    with pytest.raises(InputError, match="random-noise"):
        random_noise_control(tmp_path / "no-random")


@pytest.mark.slow
def test_m3_through_the_bench_grid(tmp_path):
    """One mini subject under none, AdvDM and random noise at 11/255: the same fine-tune, sampling, metrics
    (about 2 minutes on 2 loaded cores: each of the 11 stages loads and saves a model)."""
    from cloakbench.bench import Runner, load_config

    cfg = {"name": "m3", "model": "mini", "subject": "toy", "resolution": 32,
           "data": {"world": {"subjects": [7], "photos": 4, "seed": 0}, "train": 2, "reference": 2},
           "protections": [{"method": "none"}, {"method": "advdm", "eps": "11/255", "steps": 2},
                           {"method": "random-noise", "eps": "11/255"}],
           "recipes": [{"name": "db", "steps": 2, "lr": 2e-4, "prior": False}],
           "sampling": {"prompts": ["a photo of sks toy"], "n": 2, "steps": 3}, "metrics": ["ism[mini]"]}
    (tmp_path / "m3.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    Runner(load_config(tmp_path / "m3.yaml"), run, device="cpu").execute()
    res = CliRunner().invoke(app, ["analyze", "m3", str(run)])
    assert res.exit_code == 0, res.output
    s = json.loads((run / "analysis/m3.json").read_text())
    assert s["linf_255"] == {"advdm@11/255": 11.0, "random-noise@11/255": 11.0} and not s["warnings"]
    assert set(s["tables"][0]["rows"]) == {"none", "advdm@11/255", "random-noise@11/255"}
    assert all("ism[mini]" in row for row in s["tables"][0]["rows"].values())
    prot = {json.loads(p.read_text())["method"]: p.parent for p in run.glob("artifacts/protect-*/protection.json")}
    a, r = (read_images(sorted(prot[m].glob("*.png")), None, min_size=None).images for m in ("advdm", "random-noise"))
    assert not torch.equal(a, r)


def test_m4_writes_three_prompt_folders_grid_and_record(tmp_path):
    from cloakbench import stages
    from cloakbench.models import load_model
    from cloakbench.models.mini import world
    from cloakbench.personalize import TrainConfig

    photos = world.photos(135, 4, seed=0)  # held-out subject
    save_images(photos[:2], tmp_path / "train")
    save_images(photos[2:], tmp_path / "refs")
    cfg = TrainConfig(instance_prompt="a photo of sks toy", class_prompt="a photo of toy", steps=3, lr=2e-4,
                      resolution=32, prior_weight=0.0)
    stages.train(tmp_path / "train", tmp_path / "model", model=load_model("mini"), cfg=cfg)
    out = tmp_path / "m4"
    res = CliRunner().invoke(app, ["analyze", "m4", str(tmp_path / "model"), "--out", str(out), "--subject", "toy",
                                   "-n", "2", "--steps", "2", "-r", str(tmp_path / "refs"), "--metrics", "ism[mini]",
                                   "--clip", "mini"])
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "concepts.json").read_text())
    assert rec["prompts"] == ["a photo of sks", "a photo of sks toy", "a photo of toy"]
    folders = ["a_photo_of_sks", "a_photo_of_sks_toy", "a_photo_of_toy"]
    for prompt, folder in zip(rec["prompts"], folders):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["000.png", "001.png"]
        entry = rec["per_prompt"][prompt]
        assert entry["folder"] == folder and -1 <= entry["metrics"]["ism[mini]"] <= 1
        assert 0 <= entry["concept_rates"]["subject_rate"] <= 1
    assert rec["config"]["suffix"] == "" and rec["config"]["negative_prompt"] == ""  # plain prompts, as infer.py
    assert Image.open(out / "grid.png").size == (2 * 36, 3 * 36)  # one row per prompt, 2 px white padding
    sks, cls = (read_images(out / f, None, min_size=None).images for f in ("a_photo_of_sks", "a_photo_of_toy"))
    assert not torch.equal(sks, cls)  # same seeds, different prompts


def test_analyze_without_subcommand_is_still_misalignment(tmp_path):
    from cloakbench.models.clip import Clip, build_tiny_clip

    clip = Clip(build_tiny_clip())
    clip.model.save_pretrained(tmp_path / "clip")
    clip.tokenizer.save_pretrained(tmp_path / "clip")
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 64, 64, generator=g)
    save_images(clean, tmp_path / "clean")
    save_images((clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1), tmp_path / "noisy")
    out = tmp_path / "ana"
    res = CliRunner().invoke(app, ["analyze", "--clip", str(tmp_path / "clip"), str(tmp_path / "clean"),
                                   str(tmp_path / "noisy"), "--out", str(out), "--resolution", "64"])  # README's form
    assert res.exit_code == 0, res.output
    assert set(json.loads((out / "misalignment.json").read_text())["groups"]) == {"clean", "noisy"}
    res = CliRunner().invoke(app, ["analyze", "misalignment", "--help"])
    assert res.exit_code == 0 and "M1 / M2" in res.output
