"""The command line: help, doctor's honesty, weights commands."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cloakbench.cli import app

runner = CliRunner()


def test_help_lists_commands():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    assert "doctor" in out.output and "weights" in out.output


def test_doctor_reports_present_and_missing(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "codeformer.pth").write_bytes(b"x")
    monkeypatch.setenv("CLOAKBENCH_HOME", str(home))
    out = runner.invoke(app, ["doctor", "--json"])
    assert out.exit_code == 0, out.output
    checks = {(c["group"], c["name"]): c for c in json.loads(out.output)}
    assert checks[("core", "torch")]["ok"]
    assert checks[("core", "tiny model loss + input gradient")]["ok"]
    assert checks[("weights", "codeformer")]["ok"]
    assert not checks[("weights", "gfpgan-v1.4")]["ok"]
    assert "cloakbench weights fetch gfpgan-v1.4" in checks[("weights", "gfpgan-v1.4")]["detail"]
    import importlib.util

    for module in ("dlib", "ray", "pyiqa"):  # reported as installed exactly when importable
        assert checks[("backends", module)]["ok"] == (importlib.util.find_spec(module) is not None)


def test_weights_list_and_fetch_offline(monkeypatch):
    out = runner.invoke(app, ["weights", "list"])
    assert out.exit_code == 0 and "codeformer" in out.output and "missing" in out.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = runner.invoke(app, ["weights", "fetch", "realesrgan-x4plus"])
    assert out.exit_code == 1 and "offline" in out.output


def test_help_prints_brackets_as_written():
    """#32 item 4: help text is not rich markup: `cloakbench[parquet]` and `ism[dlib]` keep their brackets."""
    from typer.testing import CliRunner

    from cloakbench.cli import app

    flat = lambda args: " ".join(CliRunner().invoke(app, args, terminal_width=80).output.split())  # noqa: E731
    assert "cloakbench[parquet]" in flat(["export", "--help"])
    assert "ism[dlib]" in flat(["evaluate", "--help"])
    assert "purifier(+cdl)(+qes)" in flat(["audit", "--help"])
