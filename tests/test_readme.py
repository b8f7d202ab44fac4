"""The README as a user runs it: its Python examples run as written (on generated photos, with the tiny model);
every `cloakbench` command line in it names commands and options that exist; the ones that need neither a GPU,
a download nor a trained folder run as written from a fresh folder, and the package installs as a user would."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def run_in(tmp_path, monkeypatch, code: str) -> None:
    """Run README code in ``tmp_path`` beside a ``photos/`` folder of two random 96 x 80 photos."""
    (tmp_path / "photos").mkdir()
    for i in range(2):
        arr = np.random.default_rng(i).integers(0, 256, (80, 96, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / "photos" / f"p{i}.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    run_in(tmp_path, monkeypatch, code)
    assert sorted(p.name for p in (tmp_path / "protected").iterdir()) == ["00000.png", "00001.png"]
    printed = capsys.readouterr().out
    linf = float(re.search(r"'linf_max_255': ([0-9.]+)", printed).group(1))
    assert 7.5 <= linf <= 8.5  # the step is 8/255; measured after rounding


def test_readme_stages_example_runs(tmp_path, monkeypatch, capsys):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    assert "stages.protect" in code
    run_in(tmp_path, monkeypatch, code)
    assert sorted(p.name for p in (tmp_path / "protected").glob("*.png")) == ["p0.png", "p1.png"]
    assert sorted(p.name for p in (tmp_path / "purified").iterdir()) == ["p0.png", "p1.png", "purification.json"]
    assert 1 <= float(capsys.readouterr().out.strip()) <= 8  # measured on the saved PNGs


def readme_commands() -> list[str]:
    """Every ``cloakbench ...`` line of the README's bash blocks, without its comment."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("cloakbench"):
                lines.append(line)
    return lines


def test_every_readme_command_names_commands_and_options_that_exist():
    """Parsed by the real command line (click; placeholders such as RUN_DIR stand for arguments, a line with `...`
    may leave required options out): a renamed option or command fails here until the README says the same."""
    import shlex

    import typer.main

    from cloakbench.cli import app

    # typer may carry its own copy of click: groups and errors are recognised by what they have, not by class
    root = typer.main.get_command(app)
    commands = readme_commands()
    assert len(commands) >= 30
    checked = 0
    for line in commands:
        args = [a for a in shlex.split(line)[1:] if a != "..." and not (a.startswith("[") or a.endswith("]"))]
        ctx = root.make_context("cloakbench", [], resilient_parsing=True)
        cmd = root
        while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
            cmd = cmd.commands[args.pop(0)]
        if args[:1] == ["--help"] or (not args and not hasattr(cmd, "commands")):
            continue
        if hasattr(cmd, "commands"):  # `analyze DIRS...` is the misalignment analysis
            assert "misalignment" in cmd.commands, f"README: {line!r}: no such command"
            cmd = cmd.commands["misalignment"]
        try:
            cmd.make_context(cmd.name, args, parent=ctx)
        except Exception as exc:  # noqa: BLE001 - click's usage errors, from whichever click typer uses
            if type(exc).__name__ == "MissingParameter":
                assert "..." in line, f"README: {line!r} lacks a required argument or option"
            elif hasattr(exc, "format_message"):
                raise AssertionError(f"README: {line!r}: {exc.format_message()}") from None
            else:
                raise
        checked += 1
    assert checked >= 25


def test_readme_commands_that_need_no_gpu_run_from_a_fresh_folder(tmp_path):
    """The README's first steps, verbatim, in a folder of their own: help, list, weights list, the mini export and
    the audit's plan, the quick grid's plan (the full runs are the demo's and the benchmarks' business)."""
    import shlex
    import subprocess
    import sys

    (tmp_path / "configs").symlink_to(README.parent / "configs")
    wanted = ["cloakbench --help", "cloakbench list protections --filter 'aspl*'", "cloakbench weights list",
              "cloakbench mini export photos/", "cloakbench audit photos/clean photos/protected --model mini --out audit/",
              "cloakbench bench configs/quick.yaml --out runs/quick"]
    commands = readme_commands()
    for line in wanted:
        assert line in commands, f"the README no longer says {line!r}"
        args = shlex.split(line)[1:] + (["--dry-run"] if line.split()[1] in ("audit", "bench") else [])
        out = subprocess.run([sys.executable, "-m", "cloakbench.cli", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env={**__import__("os").environ, "COLUMNS": "100"})
        assert out.returncode == 0, (line, out.stdout[-2000:], out.stderr[-2000:])
    assert len(list((tmp_path / "photos" / "protected").glob("*/*.png"))) == 8
    assert (tmp_path / "audit" / "audit.yaml").is_file()


def test_the_package_installs_as_a_user_would(tmp_path):
    """`pip install .` (no network: no dependencies, the venv's setuptools) puts every package and its data in
    place: the installed copy, alone on the path, lists the models and loads the shipped mini stack."""
    import os
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    shutil.copytree(README.parent, src, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "runs",
                                                                    "__pycache__", "cloakbench-demo"))
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    probe = ("import cloakbench, sys; from cloakbench.models import load_model; from typer.testing import CliRunner;"
             "from cloakbench.cli import app; assert cloakbench.__file__.startswith(sys.argv[1]), cloakbench.__file__;"
             "m = load_model('mini', device='cpu'); r = CliRunner().invoke(app, ['list', 'models']);"
             "print(r.exit_code, 'mini' in r.output, type(m.unet).__name__)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0 and res.stdout.split() == ["0", "True", "UNet2DConditionModel"], res.stderr[-3000:]

