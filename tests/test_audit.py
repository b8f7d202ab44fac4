"""`cloakbench audit CLEAN PROTECTED` (#32 item 3): images protected elsewhere enter a grid as a protection of their
own (``method: external``), paired by name, budget measured on the files; bad layouts are refused by name before
any work; end to end on the mini stack with `cloakbench mini export`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.audit import grid, parse_team
from cloakbench.cli import app
from cloakbench.errors import InputError


def _flat(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


def _photos(folder, names, size=32, shift=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for n in names:
        arr = rng.integers(20, 230, (size, size, 3), dtype=np.uint8)
        Image.fromarray(np.clip(arr.astype(int) + shift, 0, 255).astype(np.uint8)).save(folder / n)


def test_red_team_names():
    assert parse_team("codesr+cdl+qes") == ("codesr", True, True)
    assert parse_team("cdl") == ("none", True, False) and parse_team("JPEG") == ("jpeg", False, False)
    assert parse_team("codesr+jpeg+qes") == ("codesr+jpeg", False, True)  # a purifier chain


def test_bad_layouts_are_refused_by_name_before_any_work(tmp_path):
    clean, prot = tmp_path / "clean", tmp_path / "prot"
    _photos(clean / "ann", ["0.png", "1.png", "2.png", "3.png"])
    _photos(prot / "ann", ["0.png", "1.png"], shift=3)
    cfg = grid(clean, prot, model="mini")
    assert cfg["data"]["train"] == 2 and cfg["data"]["reference"] == 2
    assert cfg["protections"][1] == {"method": "external", "path": str(prot.resolve()), "name": "prot"}
    runner = CliRunner()
    (prot / "ann" / "1.png").rename(prot / "ann" / "9.png")  # 1.png has no protected version now
    res = runner.invoke(app, ["audit", str(clean), str(prot), "--out", str(tmp_path / "run"), "--dry-run"])
    assert res.exit_code == 2 and "no protected file for 1.png" in _flat(res.output), res.output
    (prot / "ann" / "9.png").rename(prot / "ann" / "1.png")
    Image.new("RGB", (40, 40)).save(prot / "ann" / "1.png")  # a protection keeps the size
    res = runner.invoke(app, ["audit", str(clean), str(prot), "--out", str(tmp_path / "run2"), "--dry-run"])
    assert res.exit_code == 2 and "is 40x40, its clean image" in _flat(res.output), res.output
    assert not (tmp_path / "run2" / "artifacts").exists()  # refused before any stage
    with pytest.raises(InputError, match="one folder per identity"):
        grid(clean / "ann", prot / "ann")
    with pytest.raises(InputError, match="no folder for identity bob"):
        _photos(clean / "bob", ["0.png", "1.png", "2.png"])
        grid(clean, prot)


@pytest.mark.slow
def test_audit_end_to_end_on_the_mini_stack(tmp_path):
    """mini export -> audit: the verdict names the strongest red team with its interval, the budget is the one
    measured on the exported files, report.html and verdict.json are written, a rerun does nothing again."""
    runner = CliRunner()
    photos = tmp_path / "photos"
    res = runner.invoke(app, ["mini", "export", str(photos), "--steps", "10"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (photos / "protected" / "subject007").iterdir()) == ["00.png", "01.png", "02.png",
                                                                                        "03.png"]
    args = ["audit", str(photos / "clean"), str(photos / "protected"), "--out", str(tmp_path / "run"), "--model",
            "mini", "--name", "advdm-elsewhere", "--red-teams", "jpeg,cdl+qes", "--steps", "4", "--samples", "2",
            "--class-images", "2"]
    res = runner.invoke(app, args, terminal_width=80)
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    text = _flat(res.output)
    assert "advdm-elsewhere (measured L-inf 16/255)" in text
    assert "strongest:" in text or "no measured effect" in text
    verdict = json.loads((tmp_path / "run" / "verdict.json").read_text())
    prot = verdict["victims"][0]["protections"][0]
    assert prot["protection"] == "advdm-elsewhere" and prot["budget"]["linf_255"] == 16.0
    assert {t["red_team"] for t in prot["teams"]} >= {"JPEG", "CDL + QES"}
    assert (tmp_path / "run" / "report.html").is_file()
    again = runner.invoke(app, args, terminal_width=80)
    assert again.exit_code == 0 and "ran 0 stages" in again.output
