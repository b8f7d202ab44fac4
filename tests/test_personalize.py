"""DreamBooth / LoRA with CDL, resume, class images, and the sampler (QES) on the tiny model."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from cloakbench.errors import InputError
import torch

from cloakbench.errors import CheckpointError
from cloakbench.images import read_images
from cloakbench.models import build_tiny
from cloakbench.personalize import (
    CDLPolicy,
    DreamBoothTrainer,
    TrainConfig,
    load_personalized,
)
from cloakbench.sample import (
    QES_NEGATIVE,
    SampleConfig,
    generate,
    initial_latents,
    prepare_class_images,
    qes_config,
)

PROMPT = "a photo of sks person"


@pytest.fixture(scope="module")
def faces(shared_data):
    return read_images(shared_data / "faces/vggface2/id1/protected-metacloak", 64).images


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classes")
    return prepare_class_images(build_tiny(), 4, folder=folder, steps=3, resolution=64)


def _cfg(**kw):
    base = dict(steps=30, lr=1e-4, resolution=64, cdl=CDLPolicy(enabled=True), checkpoint_every=10)
    base.update(kw)
    return TrainConfig(**base)


def test_cdl_prompts_policy():
    cdl = CDLPolicy(enabled=True)
    assert cdl.instance_prompt(PROMPT) == "a photo of sks person, bhj noisy pattern"
    assert cdl.class_prompt("a photo of person") == "a photo of person, without bhj noisy pattern"
    assert CDLPolicy().instance_prompt(PROMPT) == PROMPT  # off: unchanged
    assert CDLPolicy(enabled=True, new_token="<bhj>").noise == "<bhj> noisy pattern"
    with pytest.raises(ValueError, match="lowercase"):
        CDLPolicy(enabled=True, new_token="<BHJ>")


@pytest.mark.data
def test_dreambooth_cdl_30_steps_save_reload_identical(faces, classes, tmp_path):
    model = build_tiny()
    result = DreamBoothTrainer(model, _cfg(), tmp_path / "run").fit(faces, classes)
    assert result["steps"] == 30 and len(result["losses"]) == 30
    first = json.loads((tmp_path / "run/train_log.jsonl").read_text().splitlines()[0])
    assert first == {"instance_prompt": "a photo of sks person, bhj noisy pattern",
                     "class_prompt": "a photo of person, without bhj noisy pattern"}
    again = load_personalized(tmp_path / "run")
    cfg = SampleConfig(steps=3)
    assert torch.equal(generate(model, [PROMPT], 2, cfg, seed=5), generate(again, [PROMPT], 2, cfg, seed=5))
    assert not torch.equal(generate(build_tiny(), [PROMPT], 1, cfg, seed=5), generate(again, [PROMPT], 1, cfg, seed=5))


@pytest.mark.data
@pytest.mark.parametrize("latents", ["sample", "cached"])
def test_stop_at_7_and_resume_equals_uninterrupted(faces, classes, tmp_path, latents):
    """12 steps over 3 epochs of 4 (instance, class) pairs, stopped mid-epoch: the per-step latent draws
    (``sample``) and the cached ones both resume exactly."""
    cfg = _cfg(steps=12, latents=latents)
    a = build_tiny()
    DreamBoothTrainer(a, cfg, tmp_path / "a").fit(faces, classes)
    b = build_tiny()
    stopped = DreamBoothTrainer(b, cfg, tmp_path / "b").fit(faces, classes, stop_after=7)
    assert stopped["stopped_at"] == 7 and (tmp_path / "b/checkpoints/step-000007").is_dir()
    c = build_tiny()  # a fresh process: new model, resume from disk
    res = DreamBoothTrainer(c, cfg, tmp_path / "b").fit(faces, classes, resume=True)
    assert res["resumed_from"] == 7 and len(res["losses"]) == 5
    for (n, p), (_, q) in zip(a.unet.state_dict().items(), c.unet.state_dict().items()):
        assert torch.equal(p, q), n
    for (n, p), (_, q) in zip(a.text_encoder.state_dict().items(), c.text_encoder.state_dict().items()):
        assert torch.equal(p, q), n


@pytest.mark.data
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_trainer_losses_equal_the_bare_loop(faces, classes, tmp_path, lora):
    """Deferred syncs and log writes, prompts encoded once when the text encoder is frozen (LoRA), foreach
    clipping: the trainer's losses stay bit-identical to a bare loop of the same math, and all are logged."""
    from cloakbench.testing.bare import bare_losses

    cfg = _cfg(steps=13, lora=lora, lr=1e-3, checkpoint_every=0, log_every=5, latents="cached")
    res = DreamBoothTrainer(build_tiny(), cfg, tmp_path / "t").fit(faces, classes)
    ref = DreamBoothTrainer(build_tiny(), cfg, tmp_path / "b")
    want = bare_losses(ref, ref._cache_latents(faces, 1), ref._cache_latents(classes, 2), 13).tolist()
    assert res["losses"] == want
    logged = [json.loads(x) for x in (tmp_path / "t/train_log.jsonl").read_text().splitlines()[1:]]
    assert [r["step"] for r in logged] == list(range(1, 14)) and [r["loss"] for r in logged] == want


@pytest.mark.data
def test_sample_mode_draws_from_the_posterior_fresh_each_step(faces):
    """``latents="sample"`` keeps each image's posterior mean and std; a step's draw is a seeded function of
    (seed, step): the same step draws the same latents, the next step others, and a draw is what the VAE's
    own posterior sampling gives with that generator."""
    from cloakbench.personalize.dreambooth import _draw, _step_generator

    model = build_tiny()
    trainer = DreamBoothTrainer(model, _cfg(steps=2), "unused")
    mean, std = trainer._latent_set(faces, 1)
    assert torch.equal(mean, torch.cat([model.encode(faces[i : i + 1], sample=False) for i in range(4)]))
    assert bool((std > 0).all())
    rows = [(mean, std, 2), (mean, std, 0)]
    step0, again, step1 = (_draw(rows, _step_generator(0, s)) for s in (0, 0, 1))
    assert step0.shape == (2, *mean.shape[1:]) and torch.equal(step0, again) and not torch.allclose(step0, step1)
    vae_draw = model.encode(faces[2:3], generator=_step_generator(0, 0))
    assert torch.allclose(step0[:1], vae_draw, atol=1e-5)
    cached, none = DreamBoothTrainer(build_tiny(), _cfg(steps=2, latents="cached"), "unused")._latent_set(faces, 1)
    assert none is None and torch.equal(_draw([(cached, None, 1)], _step_generator(0, 0)), cached[1:2])


@pytest.mark.data
def test_sample_mode_is_seeded_and_differs_from_cached(faces, classes, tmp_path):
    runs = {name: DreamBoothTrainer(build_tiny(), _cfg(steps=4, checkpoint_every=0, **kw), tmp_path / name)
            .fit(faces, classes)["losses"]
            for name, kw in (("a", {}), ("b", {}), ("seed1", {"seed": 1}), ("cached", {"latents": "cached"}))}
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["seed1"] and runs["a"] != runs["cached"]


@pytest.mark.data
def test_bf16_mixed_precision_on_cpu_and_auto_resolved(faces, classes, tmp_path):
    """bf16 autocast over fp32 weights runs on the CPU; ``auto`` resolves to fp32 there; both are recorded."""
    model = build_tiny()
    res = DreamBoothTrainer(model, _cfg(steps=3, mixed_precision="bf16"), tmp_path / "bf16").fit(faces, classes)
    assert res["mixed_precision"] == "bf16" and all(torch.isfinite(torch.tensor(res["losses"])))
    assert all(p.dtype == torch.float32 for p in model.unet.parameters())
    meta = json.loads((tmp_path / "bf16/personalized.json").read_text())
    assert meta["resolved"] == {"mixed_precision": "bf16", "device": "cpu"}
    assert meta["config"]["mixed_precision"] == "bf16"
    auto = DreamBoothTrainer(build_tiny(), _cfg(steps=1), tmp_path / "auto").fit(faces)
    assert auto["mixed_precision"] == "no"
    assert json.loads((tmp_path / "auto/personalized.json").read_text())["resolved"]["mixed_precision"] == "no"


@pytest.mark.data
def test_fp16_gradient_scaler_state_is_checkpointed_and_resumes(faces, tmp_path):
    cfg = _cfg(steps=4, mixed_precision="fp16", checkpoint_every=0)
    a = build_tiny()
    DreamBoothTrainer(a, cfg, tmp_path / "a").fit(faces)
    DreamBoothTrainer(build_tiny(), cfg, tmp_path / "b").fit(faces, stop_after=2)
    scaler = json.loads((tmp_path / "b/checkpoints/step-000002/state.json").read_text())["scaler"]
    assert scaler["_growth_tracker"] == 2  # two unskipped steps since the scale was set
    c = build_tiny()
    resumed = DreamBoothTrainer(c, cfg, tmp_path / "b")
    assert resumed.fit(faces, resume=True)["mixed_precision"] == "fp16"
    assert resumed.scaler.state_dict()["_growth_tracker"] == 4  # loaded at 2, two more steps
    for p, q in zip(a.unet.parameters(), c.unet.parameters()):
        assert torch.equal(p, q)


def test_adamw8bit_without_bitsandbytes_names_the_package(monkeypatch):
    from cloakbench.errors import InputError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as when it is not installed
    monkeypatch.setitem(sys.modules, "bitsandbytes.optim", None)
    with pytest.raises(InputError, match=r"adamw8bit' needs the bitsandbytes package.*pip install bitsandbytes"):
        DreamBoothTrainer(build_tiny(), _cfg(optimizer="adamw8bit"), "unused")


def test_grid_training_keys_are_checked_by_name(tmp_path, monkeypatch):
    import importlib.util

    import yaml

    from cloakbench.bench import ConfigError, load_config

    def load(recipe):
        cfg = {"data": {"root": str(tmp_path)}, "protections": [{"method": "none"}], "recipes": [recipe]}
        (tmp_path / "g.yaml").write_text(yaml.safe_dump(cfg))
        return load_config(tmp_path / "g.yaml")

    with pytest.raises(ConfigError) as err:
        load({"name": "a", "latents": "once", "mixed_precision": "fp8", "optimizer": "sgd"})
    text = str(err.value)
    assert "recipes.0.latents: Input should be 'sample' or 'cached'" in text
    assert "recipes.0.mixed_precision: Input should be 'auto', 'no', 'bf16' or 'fp16'" in text
    assert "recipes.0.optimizer: Input should be 'adamw' or 'adamw8bit'" in text
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes"
                        else real_find_spec(name, *a))
    from cloakbench.bench import Runner

    from PIL import Image

    (tmp_path / "id1" / "clean").mkdir(parents=True)
    for k in range(4):
        Image.new("RGB", (64, 64), (60 * k, 90, 120)).save(tmp_path / "id1" / "clean" / f"{k}.png")
    cfg = load({"name": "a", "optimizer": "adamw8bit"})  # a dry run plans it (no work needs the package) ...
    assert any(s.kind == "train" for s in Runner(cfg, tmp_path / "run", device="cpu").specs)
    with pytest.raises(ConfigError, match=r"recipes\[0\].optimizer: adamw8bit needs the bitsandbytes package"):
        Runner(cfg, tmp_path / "run", device="cpu").execute()  # ... work does not start without it
    assert not (tmp_path / "run" / "artifacts").exists()
    (tmp_path / "g.yaml").unlink()
    r = load({"name": "a", "latents": "cached", "mixed_precision": "bf16"}).recipes[0]
    assert (r.latents, r.mixed_precision, r.optimizer) == ("cached", "bf16", "adamw")


class _Planted:
    """Unpickling this runs code: it writes a marker file (what a crafted optimizer.pt would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


@pytest.mark.data
def test_checkpoint_holds_tensors_only_and_a_planted_pickle_is_refused(faces, classes, tmp_path, caplog):
    DreamBoothTrainer(build_tiny(), _cfg(), tmp_path / "b").fit(faces, classes, stop_after=5)
    ckpt = tmp_path / "b/checkpoints/step-000005"
    assert sorted(p.name for p in ckpt.iterdir()) == ["optimizer.safetensors", "state.json", "trainable.safetensors"]
    marker = tmp_path / "marker"
    (ckpt / "optimizer.safetensors").unlink()
    torch.save({"state": _Planted(marker)}, ckpt / "optimizer.pt")  # as an attacker would plant it
    with pytest.raises(CheckpointError, match="pickled optimizer.pt is never loaded"):
        DreamBoothTrainer(build_tiny(), _cfg(), tmp_path / "b").load_checkpoint(ckpt)
    with caplog.at_level(logging.WARNING):  # train --resume / a bench rerun: skipped, training starts over
        res = DreamBoothTrainer(build_tiny(), _cfg(steps=6), tmp_path / "b").fit(faces, classes, resume=True)
    assert res["resumed_from"] == 0 and "step-000005 ignored" in caplog.text
    assert not marker.exists()


@pytest.mark.data
def test_lora_roundtrip_with_learned_noise_token(faces, classes, tmp_path):
    model = build_tiny()
    cfg = _cfg(steps=8, lr=1e-3, lora=True, lora_text_encoder=True, cdl=CDLPolicy(enabled=True, new_token="<bhj>"))
    DreamBoothTrainer(model, cfg, tmp_path / "lora").fit(faces, classes)
    files = sorted(p.name for p in (tmp_path / "lora/lora").iterdir())
    assert files == ["personalized.json", "text_encoder_lora.safetensors", "token_embeddings.safetensors",
                     "unet_lora.safetensors"]
    again = load_personalized(tmp_path / "lora")
    assert again.tokenizer.tokenize("<bhj> noisy pattern") == ["<bhj>", "noisy</w>", "pattern</w>"]
    emb, emb2 = model.text_encoder.get_input_embeddings().weight, again.text_encoder.get_input_embeddings().weight
    assert torch.equal(emb[-1], emb2[-1])
    base = build_tiny().text_encoder.get_input_embeddings().weight
    assert torch.equal(emb[:49408], base) and not torch.allclose(emb[-1], emb[base.new_tensor(0).long() + 5000])
    cfg_s = SampleConfig(steps=3)
    p = ["a photo of sks person, <bhj> noisy pattern"]
    assert torch.equal(generate(model, p, 1, cfg_s, seed=2), generate(again, p, 1, cfg_s, seed=2))


def test_sampler_equals_diffusers_pipeline_and_extra_term(tiny_model):
    cfg = SampleConfig(steps=4, guidance=7.5, negative_prompt=QES_NEGATIVE, scheduler="pndm", batch_size=2)
    ours = generate(tiny_model, [PROMPT], 2, cfg, seed=11)
    pipe = tiny_model.to_pipeline()
    ref = pipe([PROMPT] * 2, negative_prompt=[QES_NEGATIVE] * 2, guidance_scale=7.5, num_inference_steps=4,
               latents=initial_latents(tiny_model, [11, 12], 64, 64), output_type="pt").images
    assert torch.equal(ours, ref)
    extra = SampleConfig(**{**cfg.as_dict(), "extra_prompt": "bhj noisy pattern", "extra_scale": 2.0})
    other = generate(tiny_model, [PROMPT], 2, extra, seed=11)
    assert torch.isfinite(other).all() and not torch.equal(other, ours)
    # batch size does not change results (up to float summation order)
    single = generate(tiny_model, [PROMPT], 2, SampleConfig(**{**cfg.as_dict(), "batch_size": 1}), seed=11)
    assert torch.allclose(single, ours, atol=1e-4)


def test_qes_config_appends_the_suffix_as_the_reference():
    q = qes_config(CDLPolicy(enabled=True))
    assert (q.suffix, q.negative_prompt, q.guidance, q.steps, q.scheduler) == (
        ", without bhj noisy pattern", "noisy, lowres, artifact, pattern", 7.5, 100, "pndm")
    # DiffShortcut train_dreambooth.py:514 appends it without CDL too; off only on request
    assert qes_config(CDLPolicy()).suffix == ", without bhj noisy pattern"
    assert qes_config(CDLPolicy(), suffix=False).suffix == ""
    assert qes_config(CDLPolicy(enabled=True, new_token="<bhj>")).suffix == ", without <bhj> noisy pattern"


def test_bad_training_config():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0).validate()
    with pytest.raises(ValueError, match="rank must be >= 1"):
        TrainConfig(lora=True, lora_rank=0).validate()
    with pytest.raises(ValueError, match=r"latents must be one of sample, cached \(got 'once'\); optimizer must be"):
        TrainConfig(latents="once", optimizer="sgd").validate()
    # a saved config round-trips; one an older cloakbench wrote (a key this version lacks) is refused by name
    assert TrainConfig.from_dict(TrainConfig(lora=True).as_dict()) == TrainConfig(lora=True)
    saved = {k: v for k, v in TrainConfig().as_dict().items() if k not in ("latents", "optimizer")}
    with pytest.raises(InputError, match=r"run/personalized.json: unknown training setting\(s\) use_8bit_adam"):
        TrainConfig.from_dict({**saved, "use_8bit_adam": True}, source="run/personalized.json")


def test_class_folder_filled_up_and_logged(tmp_path, caplog):
    folder = tmp_path / "cls"
    first = prepare_class_images(build_tiny(), 2, folder=folder, steps=2, resolution=64)
    with caplog.at_level(logging.WARNING):
        more = prepare_class_images(build_tiny(), 3, folder=folder, steps=2, resolution=64)
    assert more.shape == (3, 3, 64, 64) and torch.equal(more[:2], first)
    assert "has 2 of 3 images: generating 1" in caplog.text
    assert len(list(folder.glob("*.png"))) == 3


def test_cli_train_and_sample_errors(tmp_path):
    import re

    from typer.testing import CliRunner

    from cloakbench.cli import app

    empty = tmp_path / "empty"
    empty.mkdir()

    def run(*args):
        res = CliRunner().invoke(app, list(args))
        return res.exit_code, " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())

    code, out = run("train", "--model", "tiny", "--instance-dir", str(empty), "--resolution", "64", str(tmp_path / "o"))
    assert code == 2 and "empty folder" in out
    code, out = run("train", "--model", "tiny", "--instance-dir", str(empty), "--steps", "0", str(tmp_path / "o"))
    assert code == 2 and "steps must be >= 1" in out
    code, out = run("train", "--model", "tiny", "--instance-dir", str(empty), "--lora", "--lora-rank", "0", str(tmp_path / "o"))
    assert code == 2 and "rank must be >= 1" in out
    assert not (tmp_path / "o").exists()


@pytest.mark.data
def test_cli_train_then_qes_sample(shared_data, tmp_path):
    from typer.testing import CliRunner

    from cloakbench.cli import app

    res = CliRunner().invoke(app, ["train", "--model", "tiny", "--instance-dir", str(shared_data / "faces/vggface2/id2/clean"),
                                   "--class-dir", str(tmp_path / "cls"), "--num-class-images", "2", "--class-steps", "2",
                                   "--cdl", "--steps", "4", "--lr", "1e-4", "--resolution", "64", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["sample", "--model", str(tmp_path / "run"), "--qes", "--steps", "2", "-n", "2",
                                   str(tmp_path / "gen")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "gen/sample.json").read_text())
    assert rec["config"]["suffix"] == ", without bhj noisy pattern" and len(list((tmp_path / "gen").glob("*.png"))) == 4


def test_ddim_from_a_pndm_config_never_clips_latents(tiny_model):
    """DDIM built from a PNDM config (no clip_sample key) must not clip predicted latents to [-1, 1]
    (DDIM's own default would: SD latents reach +-4)."""
    from cloakbench.sample.sampler import make_scheduler

    assert "clip_sample" not in dict(tiny_model.scheduler_config)
    s = make_scheduler(tiny_model, "ddim")
    s.set_timesteps(10)
    z = torch.full((1, 4, 8, 8), 3.0)
    out = s.step(torch.zeros_like(z), s.timesteps[-1], z)
    assert s.config.clip_sample is False and float(out.pred_original_sample.min()) > 3.0


@pytest.mark.data
def test_checkpoints_by_time_as_the_bench_trains(faces, tmp_path, monkeypatch):
    """``checkpoint_seconds`` saves once that much training time has passed (never after the last step); the
    bench's trainings use it instead of every ``steps // 4`` steps (stages.training.CHECKPOINT_SECONDS)."""
    from cloakbench.stages.training import CHECKPOINT_SECONDS, train_config

    saved = []
    monkeypatch.setattr(DreamBoothTrainer, "save_checkpoint", lambda self, step: saved.append(step))
    DreamBoothTrainer(build_tiny(), _cfg(steps=3, prior_weight=0, checkpoint_every=0, checkpoint_seconds=1e-9),
                      tmp_path / "often").fit(faces)
    assert saved == [1, 2]
    saved.clear()
    DreamBoothTrainer(build_tiny(), _cfg(steps=3, prior_weight=0, checkpoint_every=0, checkpoint_seconds=1e9),
                      tmp_path / "never").fit(faces)
    assert saved == []
    from cloakbench.bench.config import RecipeSpec

    recipe = RecipeSpec(name="db", steps=200, lr=2e-4, num_class_images=4).training()
    cfg = train_config(recipe, prompts=("a", "b"), resolution=32, seed=0)
    assert cfg.checkpoint_every == 0 and cfg.checkpoint_seconds == CHECKPOINT_SECONDS > 0
