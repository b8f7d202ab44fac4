"""Bench runner: config validation, plan sharing, SIGKILL halfway + resume, no duplicate rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloakbench.bench import ConfigError, Runner, load_config
from grids import one_identity_grid, same_rows

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _write(tmp_path, cfg: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture()
def smoke_cfg(shared_data, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data"]["root"] = str(shared_data / "faces/vggface2")
    return cfg


@pytest.mark.data
def test_three_mistakes_all_reported_nothing_runs(smoke_cfg, tmp_path):
    smoke_cfg["protections"][0]["method"] = "aspl-typo"
    smoke_cfg["recipes"][0]["steps"] = 0
    smoke_cfg["colour"] = "blue"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, smoke_cfg))
    text = str(err.value)
    assert "protections[0].method: unknown protection 'aspl-typo'" in text
    assert "recipes.0.steps" in text and "colour" in text and len(err.value.problems) == 3


def test_missing_folder_and_bad_budget_named(tmp_path):
    cfg = {"data": {"root": str(tmp_path / "nope")}, "protections": [{"method": "advdm", "eps": "2"}],
           "recipes": [{"name": "a"}], "purifications": ["none", "jpeg+nosuch"], "metrics": ["ism", "fid"]}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, cfg))
    text = str(err.value)
    for key in ("data.root", "protections[0].eps", "purifications[1]", "metrics[1]"):
        assert key in text, text


@pytest.mark.data
def test_plan_shares_upstream_work(smoke_cfg, tmp_path):
    r = Runner(load_config(_write(tmp_path, smoke_cfg)), tmp_path / "run", device="cpu")
    c = r.counts()
    # 2 identities x 2 protections; purify only for jpeg and blur; one shared class-image set
    assert c["protect"]["total"] == 4 and c["purify"]["total"] == 8 and c["class_images"]["total"] == 1
    assert c["train"]["total"] == 24 and c["evaluate"]["total"] == 24
    assert len({s.hash for s in r.specs}) == len(r.specs)


TRAIN_HASH_SCHEMA_1 = "aeed067aeca30e74ad2c75f15d7571ab34597389a33a2dceeed29648dff725cf"  # smoke.yaml: id1 clean


@pytest.mark.data
def test_train_hash_changes_exactly_when_training_does(smoke_cfg, tmp_path):
    """One canonical recipe view (issue 36 item 4): every key that changes the training changes the train stage's
    hash, the plan filters (which cells the recipe is crossed with) do not, and the stage reads every key from the
    spec (no key means a value from an older version). The hash itself is pinned: it changes only with the schema."""
    from cloakbench.bench.runner import plan
    from cloakbench.bench.spec import SCHEMA
    from cloakbench.stages.training import train_config

    smoke_cfg["data"]["identities"] = ["id1"]
    smoke_cfg["protections"], smoke_cfg["purifications"] = [{"method": "none"}], ["none"]
    base = dict(smoke_cfg["recipes"][0])

    def train_spec(**keys):
        smoke_cfg["recipes"] = [{**base, **keys}]
        [spec] = [s for s in plan(load_config(_write(tmp_path, smoke_cfg)))[0] if s.kind == "train"]
        return spec

    first = train_spec()
    assert SCHEMA == 1 and first.hash == TRAIN_HASH_SCHEMA_1
    training = {"latents": "cached", "mixed_precision": "no", "optimizer": "adamw8bit", "steps": 3, "lr": 1e-5,
                "lora": True, "lora_rank": 8, "cdl": True, "prior": not base.get("prior", True),
                "num_class_images": 7, "class_steps": 3}
    others = [train_spec(**{k: v}) for k, v in training.items()]
    assert len({s.hash for s in others} | {first.hash}) == len(training) + 1
    for plan_filter in ({"qes": [True]}, {"purifications": ["none"]}, {"protections": ["none"]}):
        assert train_spec(**plan_filter).hash == first.hash, plan_filter
    spec = others[0]
    cfg = train_config(spec.params["recipe"], prompts=spec.params["prompts"], resolution=64, seed=0)
    assert (cfg.latents, cfg.mixed_precision, cfg.optimizer) == ("cached", base.get("mixed_precision", "auto"), "adamw")


@pytest.mark.data
@pytest.mark.slow
def test_sigkill_halfway_then_resume(smoke_cfg, tmp_path):
    smoke_cfg["data"]["identities"] = ["id1"]
    path = _write(tmp_path, smoke_cfg)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cloakbench.cli", "bench", str(path), "--out", str(run)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = run / "bench.log"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few trainings have finished
        if log.exists() and log.read_text().count("run  sample") >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = log.read_text()
    done_before = {p.parent.name for p in (run / "artifacts").glob("*/DONE.json")}
    assert 0 < len(done_before) < 43
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    second = log.read_text()[len(first):]
    reran = {line.split()[-1] for line in second.splitlines() if " run  " in line}
    assert not (reran & done_before)  # no finished stage ran again
    assert {line.split()[2] for line in second.splitlines() if " skip " in line} == done_before
    con = sqlite3.connect(run / "results.sqlite")
    total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT spec_hash || metric) FROM results").fetchone()
    assert total == distinct == 12 * 3  # 2 protections x 3 red-teams x 2 recipes, 3 metrics each
    assert not list((run / "artifacts").glob(".work-*"))


@pytest.mark.data
def test_report_renders_in_headless_chromium(smoke_cfg, tmp_path):
    import re
    import shutil
    from urllib.parse import unquote

    from cloakbench.bench.report import build

    smoke_cfg["data"]["identities"] = ["id2"]
    smoke_cfg["protections"] = smoke_cfg["protections"][:1]
    smoke_cfg["purifications"] = ["none", "jpeg"]
    smoke_cfg["recipes"] = smoke_cfg["recipes"][1:]
    cfg = load_config(_write(tmp_path, smoke_cfg))
    run = tmp_path / "run"
    Runner(cfg, run, device="cpu").execute()
    html = build(run)
    text = html.read_text()
    assert "<table id=\"results\">" in text and "jpeg" in text and "fdfr[dlib]" in text
    assert text.count('class="pivot"') == 3  # protections x red-teams, one per metric
    timing = text[text.index('<table id="timing">'):]
    assert "<td class=\"l\">jpeg</td>" in timing and " ± " in timing.split("</tr>")[1]  # PSNR of purified vs clean
    pq = pytest.importorskip("pyarrow.parquet")
    from cloakbench.bench.store import export_parquet, read_rows

    table = pq.read_table(export_parquet(run / "results.sqlite", run / "results.parquet"))
    assert table.num_rows == len(read_rows(run / "results.sqlite")) > 0
    assert table.schema.field("value").type == "double"
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', text)
    assert srcs and all((run / unquote(s)).resolve().is_file() for s in srcs)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (.ci/run installs the Debian package)")
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'chrome'}", "--allow-file-access-from-files",
                          "--virtual-time-budget=10000", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r'data-loaded="(\d+)/(\d+)"', res.stdout)
    assert m, res.stdout[:500] + res.stderr[-500:]
    assert int(m.group(1)) == int(m.group(2)) == len(srcs) > 0  # every image decoded in the browser


def test_expected_avg_table_by_hand(tmp_path):
    """E[Avg] = 0.5 Avg(adaptive) + 0.5 Avg(base), Avg = (IMS + Q) / 2, per red-team column; in the HTML."""
    from cloakbench.bench.report import build, expected_avg_table
    from cloakbench.bench.store import write_rows

    rows = []
    for prot, ims, q in (("adaptive@16/255", 0.2, 0.4), ("advdm@16/255", 0.6, 0.8), ("none", 0.9, 0.9)):
        for metric, v in (("ims[dlib]", ims), ("q", q), ("fdfr[dlib]", 0.0)):
            rows.append({"spec_hash": prot, "metric": metric, "value": v, "n": 4, "n_no_face": 0, "identity": "id1",
                         "protection": prot, "purification": "codesr", "recipe": "db", "qes": 1, "seed": 0,
                         "details": {}, "provenance": {}})
    t = expected_avg_table(rows, {"adaptive": "advdm"})
    assert t["columns"] == ["codesr | db | QES"] and t["rows"][0]["base"] == "advdm@16/255"
    assert t["rows"][0]["vals"] == [f"{0.5 * 0.3 + 0.5 * 0.7:.3f}"]
    write_rows(tmp_path / "results.sqlite", rows)
    html = build(tmp_path).read_text()
    assert 'id="eavg"' in html and "0.500" in html


@pytest.mark.data
def test_art_style_dry_run_plan():
    preset = Path(__file__).resolve().parents[1] / "configs" / "art-style.yaml"
    root = yaml.safe_load(preset.read_text())["data"]["root"]
    if not (preset.parent / root).is_dir():
        pytest.skip(f"the art-style preset's paintings ({root}) are not here: shared test data not found")
    cfg = load_config(preset)
    specs = Runner(cfg, "/nonexistent-run", device="cpu").specs
    kinds = [s.kind for s in specs]
    # clean: 2 recipes; 3 protections x (4 red-teams with LoRA + 2 with LoRA + CDL)
    assert kinds.count("protect") == 3 and kinds.count("purify") == 9 and kinds.count("train") == 2 + 3 * 6
    train = next(s for s in specs if s.kind == "train")
    assert train.params["prompts"] == ["a painting in sks style", "a painting"] and train.params["recipe"]["lora"]
    assert next(s for s in specs if s.kind == "class_images").params["prompt"] == "a painting"
    assert any(s.kind == "evaluate" and "clip_style" in s.params["metrics"] for s in specs)


@pytest.mark.data
def test_ray_executor_matches_local(smoke_cfg, tmp_path):
    pytest.importorskip("ray")
    from cloakbench.bench.executors import run_ray

    cfg = one_identity_grid(smoke_cfg, tmp_path)
    Runner(cfg, tmp_path / "local", device="cpu").execute()
    res = run_ray(Runner(cfg, tmp_path / "ray", device="cpu"), num_cpus=2)
    assert res["ran"] > 0
    same_rows(tmp_path / "local", tmp_path / "ray")


@pytest.mark.data
def test_local_workers_match_serial(smoke_cfg, tmp_path):
    """``run_local(workers=2)``: two spawned one-thread processes give the serial run's rows (to float
    rounding: the thread count differs) and record their thread count in every DONE.json."""
    import json

    from cloakbench.bench.executors import run_local

    cfg = one_identity_grid(smoke_cfg, tmp_path)
    Runner(cfg, tmp_path / "serial", device="cpu").execute()
    res = run_local(Runner(cfg, tmp_path / "pool", device="cpu"), workers=2)
    assert res == {"ran": 9, "skipped": 0}  # protect, purify, class images, 2 x (train, sample, evaluate)
    same_rows(tmp_path / "serial", tmp_path / "pool")
    threads = {json.loads(p.read_text())["threads"] for p in (tmp_path / "pool/artifacts").glob("*/DONE.json")}
    assert threads == {1}
    assert run_local(Runner(cfg, tmp_path / "pool", device="cpu"), workers=2) == {"ran": 0, "skipped": 9}


@pytest.mark.data
def test_local_workers_keep_finished_cells_when_one_fails(smoke_cfg, tmp_path):
    """A stage that fails in a worker is raised after the stages already running finish (nothing new
    starts, as in the serial executor); what finished is kept, and a rerun (input fixed) does only the rest."""
    import shutil

    from cloakbench.bench.executors import run_local
    from cloakbench.bench.store import read_rows

    root = tmp_path / "faces"
    shutil.copytree(smoke_cfg["data"]["root"], root)
    smoke_cfg["data"]["root"] = str(root)
    smoke_cfg["protections"] = smoke_cfg["protections"][1:]
    smoke_cfg["purifications"] = ["none"]
    smoke_cfg["recipes"] = smoke_cfg["recipes"][:1]
    cfg = load_config(_write(tmp_path, smoke_cfg))
    runner = Runner(cfg, tmp_path / "run", device="cpu")
    bad = runner.files[next(s for s in runner.specs if s.kind == "protect"
                            and s.labels["identity"] == "id2").inputs["images"]][0]
    keep = bad.read_bytes()
    bad.write_bytes(b"not a png")  # after planning: the protect stage of id2 fails when it runs
    with pytest.raises(Exception, match="not an image"):
        run_local(runner, workers=2)
    kept = sorted(p.parent.name for p in (tmp_path / "run/artifacts").glob("*/DONE.json"))
    assert kept and not any(n.startswith("protect") and n in {runner.folder(s).name for s in runner.specs
                                                            if s.labels.get("identity") == "id2"} for n in kept)
    assert "fail protect-" in (tmp_path / "run/bench.log").read_text()
    bad.write_bytes(keep)
    res = run_local(Runner(cfg, tmp_path / "run", device="cpu"), workers=2)
    assert res["skipped"] == len(kept) and res["ran"] == len(runner.specs) - len(kept)
    assert {r["identity"] for r in read_rows(tmp_path / "run/results.sqlite")} == {"id1", "id2"}


@pytest.mark.data
def test_paper_faces_plan_maps_one_to_one_onto_the_papers_tables(shared_data, tmp_path):
    """configs/paper-faces.yaml on a setabc folder of 4 identities (built from shared/data): every entry of
    Tables 1, 3 and 4 resolves to a planned cell, every planned cell fills an entry, and --dry-run prints
    the mapping. Counts: Table 1 has 13 rows (12 of the paper + Ours without QES) x 8 columns."""
    import shutil

    import yaml
    from PIL import Image, ImageOps
    from typer.testing import CliRunner

    from cloakbench.bench.paper import map_tables, planned_cells
    from cloakbench.cli import app

    root = tmp_path / "vggface2-setabc"
    faces = sorted((shared_data / "faces/vggface2").glob("id*/clean"))
    for k in range(4):  # a 4th identity: the first one mirrored (other bytes, so other hashes)
        src = sorted(faces[k % 3].glob("*.png"))
        for s, sub in enumerate(("set_A", "set_B", "set_C")):
            (root / f"id{k + 1}" / sub).mkdir(parents=True)
            for j, f in enumerate(src):
                im = Image.open(f).convert("RGB")
                im = ImageOps.mirror(im) if k == 3 else im
                im.rotate(s * 3).save(root / f"id{k + 1}" / sub / f"{j}.png")  # set_A/B/C differ
    preset = Path(__file__).resolve().parents[1] / "configs" / "paper-faces.yaml"
    raw = yaml.safe_load(preset.read_text())
    raw["data"]["root"] = str(root)
    path = tmp_path / "paper-faces.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    runner = Runner(cfg, tmp_path / "run", device="cpu")
    cells = planned_cells(runner.specs)
    m = map_tables(cfg, cells)
    assert not m["missing"] and not m["unused"], (m["missing"], m["unused"])
    t1 = [e for e in m["entries"] if e.table == "Table 1"]
    assert len(t1) == 13 * 8 and [e.column for e in t1 if e.cell is None] == ["Glaze"] * 13
    assert {e.row for e in m["entries"] if e.table == "Table 4 (ASPL)"} >= {"none", "CodeFormer", "SR", "CDL (+ QES)"}
    assert len(cells) == len({s.hash for s in runner.specs if s.kind == "evaluate"}) / 4  # 4 identities x 1 seed
    c = runner.counts()
    assert c["protect"]["total"] == 4 * 7  # six protections + the adaptive attack, per identity
    # a purification runs only where a recipe trains on it: CodeFormer / SR alone only on ASPL
    purified = {(s.params["method"]) for s in runner.specs if s.kind == "purify"}
    assert purified == {"blur", "jpeg", "tvm", "pixel-diffpure", "latent-diffpure", "latent-diffpure-empty", "ddspure",
                        "gridpure", "impress", "codesr", "codeformer", "sd-upscaler"}
    assert sum(s.kind == "purify" and s.params["method"] == "codeformer" for s in runner.specs) == 4
    res = CliRunner().invoke(app, ["bench", str(path), "--out", str(tmp_path / "run"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "Table 1" in res.output and "GrIDPure" in res.output and "MISSING" not in res.output
    assert not (tmp_path / "run").exists()
    shutil.rmtree(root)


def test_recipe_protections_filter_is_checked_and_not_hashed(tmp_path):
    """``recipes[].protections`` names protections by method or label; a wrong name is an error with its key,
    and the filter never enters the train stage's spec (the same training whichever protections it meets)."""
    from cloakbench.bench.config import BenchConfig, RecipeSpec

    raw = {"data": {"root": str(tmp_path)}, "protections": [{"method": "none"}, {"method": "advdm", "eps": "8/255"}],
           "recipes": [{"name": "a", "protections": ["advdm@8/255", "aspl"]}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"recipes\[0\].protections\[1\]: 'aspl' is neither"):
        load_config(tmp_path / "g.yaml")
    r = RecipeSpec(name="a", protections=["advdm"])
    assert "protections" not in r.training() and r.training() == RecipeSpec(name="a").training()
    assert set(r.training()) == set(RecipeSpec.model_fields) - set(RecipeSpec.PLAN)  # every training key explicit
    cfg = BenchConfig.model_validate({**raw, "recipes": [{"name": "a", "protections": ["advdm"]}]})
    assert [r.takes(p) for p in cfg.protections for r in cfg.recipes] == [False, True]


def test_sampling_suffix_key_defaults_to_the_reference_and_is_checked(tmp_path):
    """#31: ", without <noise>" on every sampling prompt of every cell by default (DiffShortcut
    train_dreambooth.py:514); the key reaches every sample stage's spec; a bad value is named before any work."""
    from cloakbench.bench.runner import plan

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "mini-paper.yaml").read_text())
    specs, _ = plan(load_config(_write(tmp_path, cfg)))
    samples = [s for s in specs if s.kind == "sample"]
    assert samples and {s.params["suffix"] for s in samples} == {"always"}
    cfg["sampling"]["suffix"] = "cdl+qes"
    other = {s.hash for s in plan(load_config(_write(tmp_path, cfg)))[0] if s.kind == "sample"}
    assert other.isdisjoint(s.hash for s in samples)  # another suffix is other samples, never mixed with these
    cfg["sampling"]["suffix"] = "sometimes"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, cfg))
    assert "sampling.suffix" in str(err.value) and "'always'" in str(err.value)


def test_progress_names_the_cell_a_stage_serves(tmp_path):
    """#32 item 4: the progress line says which cell a stage works for, not its hash."""
    from cloakbench.minilab.demo import demo_runner

    runner = demo_runner(tmp_path / "run")
    said = {s.kind: runner.describe(s) for s in runner.specs if s.kind != "class_images"}
    words = {s.hash: runner.describe(s) for s in runner.specs}
    assert "train subject007 advdm@16/255 codesr-mini dreambooth-cdl" in words.values(), words
    assert said["protect"].startswith("protect subject") and "@16/255" in said["protect"]
    assert all(h[:16] not in w for h, w in words.items())


def test_quick_grid_plans_from_a_fresh_clone():
    """configs/quick.yaml (the README's first bench command) needs nothing but the package: the mini world."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml")
    kinds = [s.kind for s in Runner(cfg, "/nonexistent-run", device="cpu").specs]
    assert kinds.count("train") == 10 and kinds.count("evaluate") == 10
