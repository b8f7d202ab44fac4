"""A user's files are never lost or mixed up, and bad input gets one named error (exit 2), not a traceback.

Each test is one row of the table in docs/RELIABILITY.md."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench import Runner, load_config
from cloakbench.cli import app
from cloakbench.errors import ConfigError, InputError, RunFolderError
from grids import model_bytes, one_identity_grid, same_rows, smoke_grid

cli = CliRunner()


def photos(folder: Path, names=("a.png", "b.png"), size=(72, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        arr = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(*args: str):
    res = cli.invoke(app, [str(a) for a in args])
    return res, " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())


PROTECT = ("-m", "advdm", "--model", "tiny", "--resolution", "64", "--steps", "1")


# ------------------------------------------------------------------ 1. originals never replaced
def test_output_folder_equal_to_input_is_refused_and_originals_kept(tmp_path):
    src = photos(tmp_path / "photos")
    before = snapshot(src)
    for args in (("protect", src, src, *PROTECT), ("purify", src, src, "-m", "jpeg", "--resolution", "64"),
                 ("purify", src, tmp_path, "-m", "jpeg", "--resolution", "64")):  # the output folder holds the inputs
        res, text = run(*args)
        assert res.exit_code == 2 and "holds input file" in text, text
        assert snapshot(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # nothing written beside


# ------------------------------------------------------------------ 4. one output per input
def test_inputs_sharing_a_stem_are_refused_with_their_names(tmp_path):
    src = photos(tmp_path / "photos", names=("a.png", "a.jpg", "b.png"))
    res, text = run("purify", src, tmp_path / "out", "-m", "jpeg", "--resolution", "64")
    assert res.exit_code == 2 and "a.jpg" in text and "a.png" in text and "share a name" in text
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 5. --overwrite replaces the whole folder
def test_overwrite_replaces_the_whole_folder_and_refuses_without_it(tmp_path):
    res, _ = run("purify", photos(tmp_path / "three", names=("x.png", "y.png", "z.png")), tmp_path / "out",
                 "-m", "jpeg", "--resolution", "64")
    assert res.exit_code == 0
    res, text = run("purify", photos(tmp_path / "two", names=("x.png", "y.png")), tmp_path / "out", "-m", "jpeg",
                    "--resolution", "64")
    assert res.exit_code == 2 and "--overwrite" in text and len(list((tmp_path / "out").glob("*.png"))) == 3
    res, _ = run("purify", tmp_path / "two", tmp_path / "out", "-m", "jpeg", "--resolution", "64", "--overwrite")
    assert res.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["purification.json", "x.png", "y.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "three", "two"]  # no work or old folder left
    mine = photos(tmp_path / "mine", names=("keep.png",))
    res, text = run("purify", tmp_path / "two", mine, "-m", "jpeg", "--resolution", "64", "--overwrite")
    assert res.exit_code == 2 and "holds no purification.json" in text and (mine / "keep.png").is_file()


# ------------------------------------------------------------------ 6. evaluate pairs by name
def test_evaluate_pairs_fidelity_by_name_and_lists_unmatched(tmp_path):
    a = photos(tmp_path / "a", names=("x.png", "y.png"))
    b = photos(tmp_path / "b", names=("y.png", "x.png"))  # same pictures under swapped names
    res, text = run("evaluate", a, "-r", b, "--metrics", "psnr", "--resolution", "0", "--json", tmp_path / "s.json")
    assert res.exit_code == 0, text
    psnr = json.loads((tmp_path / "s.json").read_text())["metrics"]["psnr"]
    assert psnr["value"] < 20  # x compared with x (by name), not with position 0 of b
    photos(tmp_path / "c", names=("x.png", "w.png"))
    res, text = run("evaluate", a, "-r", tmp_path / "c", "--metrics", "psnr", "--resolution", "0")
    assert res.exit_code == 2 and "y.png matches no reference" in text and "reference w.png is matched by 0" in text
    prefixed = photos(tmp_path / "prot", names=("noisy_x.png", "noisy_y.png"))  # a protection tool's names
    res, text = run("evaluate", prefixed, "-r", a, "--metrics", "psnr,linf", "--resolution", "0")
    assert res.exit_code == 0, text
    same = photos(tmp_path / "same", names=("x.png", "y.png"))
    res, _ = run("evaluate", a, "-r", same, "--metrics", "psnr", "--resolution", "0", "--json", tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())  # identical files: PSNR is infinite, JSON stays valid
    assert res.exit_code == 0 and data["metrics"]["psnr"]["value"] is None


# ------------------------------------------------------------------ 3, 7. run identity and lock
def _grid(tmp_path, name="g", steps=2, recipe="db") -> Path:
    photos(tmp_path / "data" / "id1" / "clean", names=[f"{i}.png" for i in range(4)])
    cfg = {"name": name, "model": "tiny", "resolution": 64, "data": {"root": str(tmp_path / "data"), "identities": ["id1"]},
           "protections": [{"method": "none"}], "recipes": [{"name": recipe, "steps": steps, "prior": False}],
           "sampling": {"n": 1, "steps": 2, "prompts": ["a photo of sks person"]}, "metrics": ["brisque"]}
    path = tmp_path / f"{name}-{steps}-{recipe}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_different_grid_in_the_same_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = Runner(load_config(_grid(tmp_path, "g8", 8)), run_dir)
    with first.session():
        pass
    other = Runner(load_config(_grid(tmp_path, "g4", 4)), run_dir)
    with pytest.raises(RunFolderError, match="holds grid 'g8'.*not 'g4'"):
        with other.session():
            pass
    # adding on purpose: refused while the recipe name 'db' would mean 4 steps here and 8 there
    with pytest.raises(RunFolderError, match="recipe 'db'"):
        with Runner(load_config(_grid(tmp_path, "g4", 4)), run_dir, add=True).session():
            pass
    with Runner(load_config(_grid(tmp_path, "g4b", 4, recipe="db4")), run_dir, add=True).session():
        pass
    assert json.loads((run_dir / "grid.json").read_text())["added"][0]["name"] == "g4b"
    res, text = run("bench", _grid(tmp_path, "g4", 4), "--out", run_dir)
    assert res.exit_code == 2 and "--add" in text
    held = (run_dir / "grid.json").read_text()  # the dry run refuses what the run refuses, and writes nothing
    res, text = run("bench", _grid(tmp_path, "g4", 4), "--out", run_dir, "--dry-run")
    assert res.exit_code == 2 and "--add" in text and "plan for" not in text
    res, text = run("bench", _grid(tmp_path, "g4c", 4, recipe="db4c"), "--out", run_dir, "--add", "--dry-run")
    assert res.exit_code == 0 and "plan for" in text and (run_dir / "grid.json").read_text() == held
    res, text = run("bench", _grid(tmp_path, "g4", 4), "--out", tmp_path / "new", "--dry-run")
    assert res.exit_code == 0 and not (tmp_path / "new" / "grid.json").exists()
    (tmp_path / "afile").write_text("kept")
    for extra in ((), ("--dry-run",)):  # an --out that is a file is refused by both, and left as it was
        res, text = run("bench", _grid(tmp_path, "g4", 4), "--out", tmp_path / "afile", *extra)
        assert res.exit_code == 2 and "is a file" in text and (tmp_path / "afile").read_text() == "kept"


def test_add_may_widen_a_recipes_filters_and_reads_labels_written_before(tmp_path):
    """A recipe's plan filters (protections, purifications, qes) choose cells, not what a cell computes: a grid
    that widens them adds cells under the same recipe name."""
    from cloakbench.bench.spec import SCHEMA

    def grid(name, protections, filt, steps=2):
        path = _grid(tmp_path, name, steps)
        cfg = yaml.safe_load(path.read_text())
        cfg["protections"] = protections
        cfg["recipes"][0].update(protections=filt, qes=[False])
        path.write_text(yaml.safe_dump(cfg))
        return load_config(path)

    run_dir = tmp_path / "run"
    none, noise = {"method": "none"}, {"method": "random-noise", "eps": "8/255"}
    with Runner(grid("narrow", [none], ["none"]), run_dir).session():
        pass
    with Runner(grid("wide", [none, noise], ["none", "random-noise"]), run_dir, add=True).session():
        pass
    held = json.loads((run_dir / "grid.json").read_text())
    assert [a["name"] for a in held["added"]] == ["wide"] and held["schema"] == SCHEMA
    with Runner(grid("narrow2", [none], ["none"]), run_dir, add=True).session():
        pass
    with pytest.raises(RunFolderError, match="recipe 'db'"):  # other training under the name is still refused
        with Runner(grid("steps3", [none], ["none"], steps=3), run_dir, add=True).session():
            pass


@pytest.mark.parametrize("old", ["no schema", "other schema", "no grid.json"])
def test_run_folder_of_another_hash_schema_is_refused_with_the_way_on(tmp_path, old):
    """One hash schema (issue 36 item 4): a folder written under another one (or before schemas) names its stages
    by other hashes; it is refused before any work, saying what stays readable and how to go on."""
    run_dir = tmp_path / "run"
    path = _grid(tmp_path, "g", 2)
    with Runner(load_config(path), run_dir).session():
        pass
    held = json.loads((run_dir / "grid.json").read_text())
    (run_dir / "artifacts").mkdir(exist_ok=True)
    if old == "no grid.json":
        (run_dir / "grid.json").unlink()
        (run_dir / "results.sqlite").write_bytes(b"")
    else:
        held.pop("schema") if old == "no schema" else held.update(schema=0)
        (run_dir / "grid.json").write_text(json.dumps(held))
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(RunFolderError, match=r"other hashes.*results stay readable.*new --out.*03d5561") as err:
        Runner(load_config(path), run_dir).check()
    assert {"no schema": "before hash schema 1", "other schema": "schema 0, this cloakbench reads 1",
            "no grid.json": "no grid.json"}[old] in str(err.value)
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written


def test_second_process_on_a_run_folder_is_refused_and_a_dead_holder_releases_it(tmp_path):
    run_dir = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from cloakbench.bench.runfolder import locked\n"
            "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res, text = run("bench", _grid(tmp_path), "--out", run_dir)
        assert res.exit_code == 2 and f"in use by pid {holder.pid} on {socket.gethostname()}" in text, text
    finally:
        holder.kill()  # killed, not released: the kernel drops its lock
        holder.wait()
    with Runner(load_config(_grid(tmp_path)), run_dir).session():
        assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid()
    assert (run_dir / ".lock").read_text() == ""


# ------------------------------------------------------------------ 8. named errors
@pytest.mark.parametrize("args, message", [
    (("protect", "{src}", "{out}", *PROTECT, "-o", "nosuch=1"), "nosuch"),
    (("protect", "{src}", "{out}", "-m", "e-aspl", "--model", "tiny", "--resolution", "64", "--steps", "1"),
     "ensemble"),
    (("protect", "{src}", "{out}", *PROTECT, "--eps", "300/255"), "at most 255/255"),
    (("protect", "{src}", "{out}", *PROTECT, "--eps", "1e-9"), "0/255"),
    (("protect", "{src}", "{file}", *PROTECT), "is a file"),
    (("purify", "{src}", "{out}", "-m", "jpeg", "--resolution", "-8"), "resolution -8"),
    (("bench", "{cfg}", "--out", "{file}"), "is a file"),
])
def test_bad_input_is_one_named_error(tmp_path, args, message):
    src = photos(tmp_path / "photos")
    (tmp_path / "afile").write_text("x")
    cfg = _grid(tmp_path)
    fill = {"{src}": src, "{out}": tmp_path / "out", "{file}": tmp_path / "afile", "{cfg}": cfg}
    res, text = run(*[fill.get(a, a) for a in args])
    assert res.exit_code == 2 and message in text and "Traceback" not in res.output, text
    assert not (tmp_path / "out").exists()


def test_config_mistakes_are_named(tmp_path):
    cfg = yaml.safe_load(_grid(tmp_path).read_text())
    cfg["data"]["identities"] = ["../../etc"]
    cfg["purifications"] = "jpeg"
    cfg["protections"] = [{"method": "advdm", "eps": "8/255"}, {"method": "advdm", "eps": "8/255", "steps": 3}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bad.yaml")
    text = str(err.value)
    assert "purifications: Input should be a valid list" in text and "unknown purifier 'j'" not in text
    cfg["purifications"] = ["none"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    text = str(pytest.raises(ConfigError, load_config, tmp_path / "bad.yaml").value)
    assert "'../../etc' is not a folder name" in text and "share the label 'advdm@8/255'" in text


def test_huge_image_refused_before_decoding(tmp_path, monkeypatch):
    from cloakbench.images import read_images

    photos(tmp_path / "p", names=("big.png",), size=(300, 200))
    monkeypatch.setenv("CLOAKBENCH_MAX_PIXELS", "50000")
    with pytest.raises(InputError.__mro__[1]) as err:  # CloakbenchError
        read_images(tmp_path / "p", 64)
    assert "300x200" in str(err.value) and "CLOAKBENCH_MAX_PIXELS" in str(err.value)


def test_subfolders_and_symlink_loops_are_reported_not_silently_skipped(tmp_path, caplog):
    from cloakbench.images import list_image_files

    src = photos(tmp_path / "p")
    (src / "more").mkdir()
    (src / "loop.png").symlink_to(src / "loop.png")
    (src / "scan.tif").write_bytes(b"II*\x00")
    with caplog.at_level("WARNING"):
        files = list_image_files(src)
    assert [p.name for p in files] == ["a.png", "b.png"]
    assert "more/" in caplog.text and "loop.png" in caplog.text and "scan.tif" in caplog.text


def test_doctor_install_hints_keep_their_extras():
    res = cli.invoke(app, ["doctor", "--no-smoke"])
    assert "cloakbench[" in res.output  # rich markup would eat "[extra]"


def test_corrupt_local_model_file_is_not_blamed_on_the_hub(tmp_path, tiny_model):
    from cloakbench.errors import ModelLoadError
    from cloakbench.models import load_model

    tiny_model.save(tmp_path / "m")
    weights = next((tmp_path / "m" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: 1000])
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "m")
    assert "local folder" in str(err.value) and "Hub" not in str(err.value)


def test_progress_is_printed_as_lines_when_not_on_a_terminal():
    from rich.console import Console

    from cloakbench.progress import LineProgress, progress_bar

    console = Console(record=True, force_terminal=False, width=100)
    bar = progress_bar(console, "steps")
    assert isinstance(bar, LineProgress)
    bar.interval = 0
    with bar:
        t = bar.add_task("class images", total=3)
        for i in range(3):
            bar.update(t, completed=i + 1)
    lines = console.export_text().splitlines()
    assert lines[0].startswith("class images: 1/3") and lines[-1].startswith("class images: 3/3")
    assert lines[0].endswith("s left)") and "left" not in lines[-1]  # time left at the rate so far (#32 item 4)


# ------------------------------------------------------------------ #37 item 1: no code from weights files
class _Planted:
    """Unpickling this writes a marker file (what a planted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _planted_files(tmp_path):
    import pickle

    import torch

    marker = tmp_path / "ran.txt"
    script = torch.jit.script(torch.nn.Linear(2, 2))
    files = {}
    for suffix in (".pt", ".pth", ".safetensors"):  # judged by content, whatever the name says
        torch.jit.save(script, tmp_path / f"script{suffix}")
        files[f"script{suffix}"] = "TorchScript"
    torch.save({"w": torch.zeros(2), "x": _Planted(marker)}, tmp_path / "pickled.pth")
    files["pickled.pth"] = "pickled objects other than tensors"
    with open(tmp_path / "legacy.ckpt", "wb") as fh:
        pickle.dump({"x": _Planted(marker)}, fh, protocol=2)
    files["legacy.ckpt"] = "pickled objects other than tensors"
    return marker, files


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / save, used to plant the archive
def test_weights_files_are_read_as_tensors_only(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from cloakbench.safe_tensors import read_state_dict

    marker, files = _planted_files(tmp_path)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    for name, why in files.items():
        with pytest.raises(InputError, match=why):
            read_state_dict(tmp_path / name)
    assert not marker.exists()  # nothing ran
    save_file({"w": torch.ones(3)}, tmp_path / "ok.safetensors")
    torch.save({"params_ema": {"w": torch.ones(3)}}, tmp_path / "ok.pth")
    assert read_state_dict(tmp_path / "ok.safetensors")["w"].sum() == 3
    assert read_state_dict(tmp_path / "ok.pth")["params_ema"]["w"].sum() == 3


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("route", ["purify-cli", "codeformer", "liqe"])
def test_every_weights_loader_refuses_planted_files(tmp_path, monkeypatch, route):
    """The CLI's `purify -m spandrel-sr --weights X`, CodeFormer's loader and LIQE's all read tensors only."""
    import torch

    marker, files = _planted_files(tmp_path)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    photos(tmp_path / "in", names=["a.png"])
    for name in ("script.pt", "pickled.pth"):
        path = tmp_path / name
        if route == "purify-cli":
            pytest.importorskip("spandrel")
            res, text = run("purify", "-m", "spandrel-sr", "-o", f"weights={path}", tmp_path / "in", tmp_path / f"out-{name}")
            assert res.exit_code == 2 and ("TorchScript" in text or "pickled objects" in text), text
            assert not (tmp_path / f"out-{name}").exists()
        elif route == "codeformer":
            pytest.importorskip("spandrel_extra_arches")
            from cloakbench.purify.spandrel_io import load_restorer

            with pytest.raises(InputError):
                load_restorer.__wrapped__(str(path))
        else:
            from cloakbench.metrics.iqa import LIQE

            with pytest.raises(InputError):
                LIQE(weights=path)
    assert not marker.exists()


# ------------------------------------------------------------------ #37 item 2: never overwrite what the command did not write
def test_user_folders_and_files_are_never_overwritten(tmp_path):
    folder = tmp_path / "mine"
    photos(folder, names=["results.csv", "x.png"][1:])
    (folder / "results.csv").write_text("my,table\n")
    res, text = run("bench", _grid(tmp_path), "--out", folder)
    assert res.exit_code == 2 and "is not a run folder and holds results.csv, x.png" in text, text
    res, text = run("bench", _grid(tmp_path), "--out", folder, "--dry-run")
    assert res.exit_code == 2 and "not a run folder" in text
    res, text = run("demo", "--out", folder)
    assert res.exit_code == 2 and "not a run folder" in text
    assert (folder / "results.csv").read_text() == "my,table\n" and sorted(p.name for p in folder.iterdir()) == [
        "results.csv", "x.png"]
    # evaluate --json: never into its inputs, never over a file that is not JSON
    src = photos(tmp_path / "gen")
    before = (src / "a.png").read_bytes()
    res, text = run("evaluate", src, "--metrics", "brisque", "--json", src / "a.png")
    assert res.exit_code == 2 and "inside the input folder" in text
    other = tmp_path / "notes.txt"
    other.write_text("keep")
    res, text = run("evaluate", src, "--metrics", "brisque", "--json", other)
    assert res.exit_code == 2 and "not a .json file" in text and other.read_text() == "keep"
    assert (src / "a.png").read_bytes() == before
    # mini train never writes the shipped weights unless told where
    res, text = run("mini", "train", "--quick")
    assert res.exit_code == 2 and "--out" in text


# ------------------------------------------------------------------ #37 item 4: non-finite and unknown options
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-1"])
def test_non_finite_or_negative_step_is_refused_before_any_work(tmp_path, value):
    src = photos(tmp_path / "photos")
    res, text = run("protect", *PROTECT, "-o", f"alpha={value}", src, tmp_path / "out")
    assert res.exit_code == 2 and "alpha" in text and ("finite" in text or "> 0" in text), text
    assert not (tmp_path / "out").exists()


def test_grid_options_are_checked_by_the_config_and_dry_run(tmp_path):
    path = _grid(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["protections"] = [{"method": "none"}, {"method": "advdm", "eps": "8/255", "options": {"alpha": float("nan"),
                                                                                           "nosuch": 1}}]
    cfg["purifications"] = ["none", "jpeg"]
    cfg["purify_options"] = {"jpeg": {"quality": float("inf"), "qualty": 75}}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    for part in ("protections[1].options: unknown option(s) nosuch", "protections[1].options: alpha=nan",
                 "purify_options.jpeg: unknown option(s) qualty", "purify_options.jpeg: quality=inf"):
        assert part in text, text
    res, text = run("bench", path, "--out", tmp_path / "run", "--dry-run")
    assert res.exit_code == 2 and "nosuch" in text and not (tmp_path / "run").exists()


# ------------------------------------------------------------------ #37 item 6: any name, spreadsheets, umask
def test_exports_and_report_links_are_safe_for_any_name(tmp_path):
    import csv

    from cloakbench.bench.report import _href
    from cloakbench.bench.store import export_csv, write_rows

    row = {"spec_hash": "h", "metric": "ism", "value": -0.5, "n": 1, "n_no_face": 0, "identity": "=HYPERLINK(\"x\")",
           "protection": "+cmd", "purification": "none", "recipe": "db", "qes": 0, "seed": 0, "details": {},
           "provenance": {}}
    write_rows(tmp_path / "r.sqlite", [row])
    got = next(csv.DictReader((export_csv(tmp_path / "r.sqlite", tmp_path / "r.csv")).open()))
    assert got["identity"] == "'=HYPERLINK(\"x\")" and got["protection"] == "'+cmd" and got["value"] == "-0.5"
    assert _href(tmp_path / "id#1" / "a%b c.png", tmp_path) == "id%231/a%25b%20c.png"
    assert _href(tmp_path / "$HOME" / "<b>.png", tmp_path) == "%24HOME/%3Cb%3E.png"


def test_outputs_respect_the_umask(tmp_path):
    from cloakbench.images import atomic_write_bytes
    from cloakbench.stages.output import staged

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.json", b"{}")
        with staged(tmp_path / "out") as work:
            (work / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


# ------------------------------------------------------------------ #37 item 5: folder-atomic mini weights
def test_a_failed_mini_weights_save_leaves_the_old_folder_whole(tmp_path, monkeypatch):
    import types

    import safetensors.torch
    import torch

    from cloakbench.models.mini import stack

    def models(value):
        out = {}
        for name in stack.PARTS:
            m = torch.nn.Linear(2, 2)
            torch.nn.init.constant_(m.weight, value)
            out[name] = m
        out["vae"].config = types.SimpleNamespace(scaling_factor=0.5)
        return out

    folder = tmp_path / "weights"
    stack.save_all(models(1.0), folder, {"run": "old"})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real, calls = safetensors.torch.save_file, []

    def dies_on_the_third(sd, path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the save
        return real(sd, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        stack.save_all(models(2.0), folder, {"run": "new"})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old run's folder, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".weights.")]  # no partial left behind
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a mini weights folder"):
        stack.save_all(models(2.0), folder, {"run": "new"})


def test_yaml_alias_bomb_and_decimal_budgets(tmp_path):
    from cloakbench.images import parse_budget

    bomb = _grid(tmp_path).read_text() + "x0: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nx1: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(ConfigError, match=r"aliases \(\*a\) are not allowed"):
        load_config(path)
    assert parse_budget("6.375/255") == pytest.approx(6.375 / 255)  # the docs' own notation
    for bad in ("nan/255", "inf/255", "8/0"):
        with pytest.raises(ValueError):
            parse_budget(bad)


def test_train_refuses_overlapping_or_missing_folders_before_any_work(tmp_path):
    src = photos(tmp_path / "photos")
    res, text = run("train", tmp_path / "out", "--model", "tiny", "--instance-dir", src, "--class-dir", src)
    assert res.exit_code == 2 and "overlap" in text and sorted(p.name for p in src.iterdir()) == ["a.png", "b.png"]
    res, text = run("train", tmp_path / "out", "--model", "tiny", "--instance-dir", tmp_path / "missing")
    assert res.exit_code == 2 and "is not a folder" in text and not (tmp_path / "out").exists()


def test_a_second_writer_of_one_output_folder_is_refused(tmp_path):
    """#37 item 2: `protect ... IN OUT` while another process writes OUT is refused naming it (the later one no
    longer deletes the other's finished output); no lock file is left behind once the write is over."""
    src = photos(tmp_path / "photos")
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from cloakbench.fsmode import hold_output; "
        f"hold_output(Path({str(out)!r})); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res, text = run("protect", *PROTECT, src, out)
        assert res.exit_code == 2 and f"output folder {out.resolve()} is in use by pid {holder.pid}" in text, text
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    res, text = run("protect", *PROTECT, src, out)
    assert res.exit_code == 0, text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no lock file left


def test_changed_photos_are_refused_not_averaged_as_repeats(tmp_path):
    """#37 item 3: the run folder records a digest of each identity's photos; rerunning after a photo changed is
    refused naming the identity; moving data.root with the same photos is the same run."""
    path = _grid(tmp_path)
    run_dir = tmp_path / "run"
    with Runner(load_config(path), run_dir).session():
        pass
    held = json.loads((run_dir / "grid.json").read_text())["inputs"]
    assert set(held) == {"id1"} and held["id1"]["train"].startswith("files:")
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["root"] = str(moved)
    path.write_text(yaml.safe_dump(cfg))
    with Runner(load_config(path), run_dir).session():  # same photos elsewhere: accepted
        pass
    Image.new("RGB", (72, 64), (9, 9, 9)).save(moved / "id1" / "clean" / "0.png")  # a training photo changes
    with pytest.raises(RunFolderError, match=r"other photos of id1 \(train photos\)"):
        Runner(load_config(path), run_dir).check()
    res, text = run("bench", path, "--out", run_dir)
    assert res.exit_code == 2 and "other photos of id1" in text


def test_corrupt_run_files_and_a_missing_ray_are_one_named_error(tmp_path):
    path = _grid(tmp_path)
    run_dir = tmp_path / "run"
    with Runner(load_config(path), run_dir).session():
        pass
    (run_dir / "grid.json").write_text("{not json")
    res, text = run("bench", path, "--out", run_dir, "--dry-run")
    assert res.exit_code == 2 and "grid.json is corrupt" in text, text
    if importlib.util.find_spec("ray") is None:
        res, text = run("bench", path, "--out", tmp_path / "other", "--executor", "ray")
        assert res.exit_code == 2 and "needs Ray" in text
    from cloakbench.bench.verdict import compute

    bad = tmp_path / "r2" / "artifacts" / "train-x"
    bad.mkdir(parents=True)
    (bad / "DONE.json").write_text("{")
    with pytest.raises(InputError, match="DONE.json is corrupt"):
        compute(tmp_path / "r2")


def test_an_extreme_strip_is_refused_from_its_header(tmp_path):
    """A 169 KB PNG of 64 x 900000 asked for 44 GB when resized to 512 px; now refused before decoding."""
    folder = tmp_path / "strip"
    folder.mkdir()
    Image.new("RGB", (64, 200000)).save(folder / "s.png")
    from cloakbench.errors import ImageError
    from cloakbench.images import read_images

    with pytest.raises(ImageError, match="crop it to a sensible aspect ratio"):
        read_images(folder, 512)


# ------------------------------------------------------------------ #37 item 9: the machine and odd names
def test_huge_seeds_are_refused_by_name_before_work(tmp_path):
    """Seeds are in [0, 2**32 - 1] (derived seeds stay in torch's and numpy's ranges): a larger one on the command
    line or in a grid is a named error, not a traceback from inside a stage."""
    src = photos(tmp_path / "in")
    res, text = run("protect", *PROTECT, "--seed", str(10**23), src, tmp_path / "out")
    assert res.exit_code == 2 and "--seed" in text and "4294967295" in text and not (tmp_path / "out").exists()
    path = _grid(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["seeds"] = [0, 2**40]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"seeds\.1"):
        load_config(path)


def test_a_name_too_long_for_the_file_system_is_one_line_and_leaves_nothing(tmp_path):
    src = photos(tmp_path / "in")
    res, text = run("purify", src, tmp_path / ("x" * 300), "-m", "jpeg", "--resolution", "64")
    flat = text.replace(" ", "")  # long paths fold at 80 columns
    assert res.exit_code == 2 and "thenameistoolongforthefilesystem" in flat and "characters)" in flat
    assert "Traceback" not in res.output and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("code, words", [(28, "the disk is full"), (30, "the file system is read-only")])
def test_a_full_or_read_only_disk_is_one_line_and_keeps_the_old_output(tmp_path, monkeypatch, code, words):
    """ENOSPC / EROFS while the images are written (simulated: tests run as root, where permissions do not bite):
    one line naming the file, exit 2; the output folder of an earlier run is untouched and no partial folder left."""
    import cloakbench.images as images

    src = photos(tmp_path / "in")
    out = tmp_path / "out"
    assert run("purify", src, out, "-m", "jpeg", "--resolution", "64")[0].exit_code == 0
    before = snapshot(out)

    def refuse(path, *a, **k):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(images, "atomic_write_bytes", refuse)
    monkeypatch.setattr(Image.Image, "save", lambda self, path, *a, **k: refuse(path))
    res, text = run("purify", src, out, "-m", "jpeg", "--resolution", "64", "--overwrite")
    assert res.exit_code == 2 and words in text and "nothing was left half-written" in text, text
    assert "Traceback" not in res.output
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_a_corrupt_results_database_is_named_and_its_rows_come_back(tmp_path):
    """A results.sqlite that is not a database: `report` says so by name (exit 2); moved aside, the next run of the
    grid writes every finished cell's rows again from its stage folder, without redoing a stage."""
    from cloakbench.bench.store import read_rows

    run_dir = tmp_path / "run"
    cfg = load_config(_grid(tmp_path))
    Runner(cfg, run_dir).execute()
    rows = read_rows(run_dir / "results.sqlite")
    (run_dir / "results.sqlite").replace(tmp_path / "kept.sqlite")
    (run_dir / "results.sqlite").write_bytes(b"not a database " * 64)
    res, text = run("report", run_dir)
    flat = text.replace(" ", "")  # long paths fold at 80 columns
    assert res.exit_code == 2 and "results.sqliteiscorrupt" in flat and "moveitaside" in flat
    (run_dir / "results.sqlite").unlink()
    assert Runner(cfg, run_dir).execute()["ran"] == 0
    again = read_rows(run_dir / "results.sqlite")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "provenance"} for r in rs]  # noqa: E731
    assert strip(again) == strip(rows) and all(json.loads(r["provenance"])["restored"] for r in again)


def test_names_that_are_not_utf8_are_refused_before_work(tmp_path):
    """An identity folder or a photo named in another system's encoding (bytes that are not UTF-8) is refused by
    name before any stage: it used to fail only when the first results were written."""
    root = os.fsencode(tmp_path / "data")
    for ident, name in ((b"id\xff", b"0.png"), (b"id1", b"caf\xe9.png")):
        os.makedirs(os.path.join(root, ident, b"clean"))
        Image.new("RGB", (64, 64)).save(os.fsdecode(os.path.join(root, ident, b"clean", name)))
    path = _grid(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].pop("identities")
    path.write_text(yaml.safe_dump(cfg))
    res, text = run("bench", path, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "'id\\udcff'arenotnamedinvalidUTF-8" in text.replace(" ", "")
    cfg["data"]["identities"] = ["id1"]
    path.write_text(yaml.safe_dump(cfg))
    res, text = run("bench", path, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "'caf\\udce9.png'arenotnamedinvalidUTF-8" in text.replace(" ", ""), text
    assert not (tmp_path / "run" / "artifacts").exists()


# ------------------------------------------------------------------ #37 items 3 and 7: threads, Ray as a cluster
@pytest.mark.data
def test_a_run_folder_pins_its_threads_so_a_resume_gives_the_same_bytes(shared_data, tmp_path):
    """#37 item 3: float rounding depends on the CPU thread count, so the run folder records the count its first
    run used (grid.json ``threads``) and every later run, with any executor, uses it: training stages redone by a
    serial resume of a folder made by two one-thread workers give the same bytes, recorded with 1 thread."""
    import json
    import shutil

    from cloakbench.bench.executors import run_local

    cfg = one_identity_grid(smoke_grid(shared_data), tmp_path)
    run = tmp_path / "run"
    run_local(Runner(cfg, run, device="cpu"), workers=2)
    assert json.loads((run / "grid.json").read_text())["threads"] == 1
    before = model_bytes(run)
    assert len(before) >= 2
    for kind in ("train", "sample", "evaluate"):
        for d in (run / "artifacts").glob(f"{kind}-*"):
            shutil.rmtree(d)
    res = Runner(cfg, run, device="cpu").execute()  # serial: proposes every core; the folder's 1 thread wins
    assert res["ran"] == 6
    assert {json.loads(p.read_text())["threads"] for p in (run / "artifacts").glob("*/DONE.json")} == {1}
    assert model_bytes(run) == before


@pytest.mark.data
@pytest.mark.slow
def test_ray_on_two_nodes_survives_a_dead_worker_node_with_local_bytes(shared_data, tmp_path):
    """#37 item 7: a Ray cluster of worker nodes (ray.cluster_utils.Cluster: separate raylet processes and session
    folders, as `ray start` makes them). The trainings start on node A, the only one with a CPU; while they are
    unfinished node B joins and A is killed; Ray runs the lost task again on B, and the rows and the trained
    models' bytes equal a local run's (one thread per stage, pinned by the run folder). The cluster is driven from
    the main thread (Ray's node start needs it); the run goes on in a second one."""
    ray = pytest.importorskip("ray")
    import threading
    import time

    from ray.cluster_utils import Cluster

    from cloakbench.bench.executors import run_local, run_ray

    cfg = one_identity_grid(smoke_grid(shared_data), tmp_path)
    run_local(Runner(cfg, tmp_path / "local", device="cpu"), workers=2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        node_a = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        training, result, failure = threading.Event(), {}, []

        def progress(spec, state):
            if spec.kind == "train" and state == "running":
                training.set()

        def go():
            try:
                result.update(run_ray(Runner(cfg, tmp_path / "ray", device="cpu"), progress))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failure.append(exc)
        runner_thread = threading.Thread(target=go)
        runner_thread.start()
        assert training.wait(600), "no training was submitted"
        time.sleep(2)  # the training's worker is starting or training on A
        trains = sorted((tmp_path / "ray" / "artifacts").glob("train-*/DONE.json"))
        cluster.add_node(num_cpus=1)
        cluster.remove_node(node_a, allow_graceful=False)
        runner_thread.join(900)
        assert not runner_thread.is_alive() and not failure, failure
        assert trains == [] and result["ran"] == 9  # no training had finished when A died; all are done now
        assert [n["Alive"] for n in ray.nodes() if n["Resources"].get("CPU") or not n["Alive"]].count(False) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()
    same_rows(tmp_path / "local", tmp_path / "ray")
    assert model_bytes(tmp_path / "ray") == model_bytes(tmp_path / "local")


def test_ray_refuses_a_run_folder_its_nodes_cannot_see(tmp_path, monkeypatch):
    """The reachability probe: a node that does not find the driver's token file in the run folder is named."""
    from cloakbench.bench import executors
    from cloakbench.errors import RunFolderError

    class FakeRay:  # two nodes; the second answers as a machine without the shared folder would
        def nodes(self):
            return [{"Alive": True, "Resources": {"CPU": 1}, "NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1"},
                    {"Alive": True, "Resources": {"CPU": 1}, "NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2"}]

        def remote(self, **_):
            def wrap(fn):
                class Task:
                    def options(self, scheduling_strategy):
                        node = scheduling_strategy.node_id

                        class Bound:
                            def remote(self, path):
                                ok, host = fn(path)
                                return (ok and node.startswith("a"), "node-" + node[0])
                        return Bound()
                return Task()
            return wrap

        def get(self, refs, timeout=None):
            return refs

    pytest.importorskip("ray")
    with pytest.raises(RunFolderError, match=r"node-b \(10.0.0.2\) cannot see the run folder .*same path"):
        executors._refuse_unreachable(FakeRay(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # the token is removed
