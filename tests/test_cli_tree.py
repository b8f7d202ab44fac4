"""The command line after the split into a package (issue 36 item 1): the same commands and options as the single
cli.py had (tests/data/cli_tree_before_split.json, dumped from it), except the deliberate changes listed here; and
``--help`` of every command imports no torch (it answers in a fraction of a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer.main

from cloakbench.cli import app

BEFORE = Path(__file__).parent / "data" / "cli_tree_before_split.json"

# (command, parameter) -> what it became; None: removed.  New parameters: ADDED.
RENAMED = {("evaluate", "size"): "resolution", ("analyze misalignment", "size"): "resolution"}
NOW_REQUIRED = {("protect", "model"), ("train", "model")}  # no silent default to the random-weight `tiny` model
ADDED = {("protect", "surrogate_dir"), ("protect", "device"), ("train", "device"), ("sample", "device"),
         ("evaluate", "device"), ("analyze misalignment", "device"), ("mini export", "device"), ("demo", "device")}


def tree(cmd, path=()) -> dict:
    """``{"command path": {param: {opts, required, default, kind, multiple, flag}}}`` of a click command tree."""
    out = {" ".join(path) or "cloakbench": {
        p.name: {"opts": sorted(p.opts + p.secondary_opts), "required": p.required,
                 "default": repr(p.default) if not callable(p.default) else "<callable>", "kind": type(p).__name__,
                 "multiple": getattr(p, "multiple", False), "flag": getattr(p, "is_flag", False)}
        for p in cmd.params}}
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        out.update(tree(sub, (*path, name)))
    return out


def test_same_commands_and_options_as_before_the_split():
    before, now = json.loads(BEFORE.read_text()), tree(typer.main.get_command(app))
    assert sorted(now) == sorted(before), "a command was added or lost"
    for cmd, params in before.items():
        for name, spec in params.items():
            new = RENAMED.get((cmd, name), name)
            assert new in now[cmd], f"{cmd}: option {spec['opts']} was lost"
            got = dict(now[cmd][new])
            if (cmd, name) in RENAMED:
                assert got["opts"] == [f"--{new}"], (cmd, name, got)
                got["opts"] = spec["opts"]
            if (cmd, name) in NOW_REQUIRED:
                assert got["required"] and not spec["required"], (cmd, name)
                got.update(required=spec["required"], default=spec["default"])
            assert got == spec, f"{cmd} {name}: {spec} became {got}"
        extra = {(cmd, p) for p in now[cmd]} - {(cmd, RENAMED.get((cmd, p), p)) for p in params}
        assert extra == {a for a in ADDED if a[0] == cmd}, f"{cmd}: unlisted new options {extra}"


def test_every_computing_command_takes_device():
    now = tree(typer.main.get_command(app))
    for cmd in ("protect", "purify", "train", "sample", "bench", "audit", "evaluate", "analyze misalignment",
                "analyze m4", "mini export", "demo"):
        assert now[cmd]["device"]["opts"] == ["--device"], cmd


def test_help_imports_no_torch():
    """Help is quick because the library is imported inside the commands, and the libraries are quieted on import."""
    probe = ("import sys, runpy; sys.argv = ['cloakbench', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('cloakbench.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    for args in ([], ["--help"], ["protect", "--help"], ["bench", "--help"], ["analyze", "m4", "--help"],
                 ["mini", "train", "--help"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().endswith("NO-TORCH"), (args, out.stdout[-300:], out.stderr[-500:])


def test_help_lists_commands_in_panels():
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["--help"], terminal_width=80).output
    panels = ["Make images:", "Fine-tune and sample:", "Benchmark:", "Measure and analyze:", "Mini stack:", "Set up:"]
    assert [out.index(p) for p in panels] == sorted(out.index(p) for p in panels), out
    assert out.index("protect") < out.index("Fine-tune") < out.index("train") < out.index("Benchmark:")
    assert max(map(len, out.splitlines())) <= 80
