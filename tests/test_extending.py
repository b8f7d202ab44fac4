"""docs/EXTENDING.md's worked example (#36 item 6): the code the guide quotes is the code of examples/plugin, the
example's own tests pass, its grid runs by path names through `cloakbench bench`, and installed without network
its entry points show in `cloakbench list`.

Torch runs on one thread here: on a 2-core machine that other processes keep busy, two torch threads made the
mini stack's stages up to 50 times slower (a thread waiting on a busy core); one keeps the grid in seconds.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from cloakbench.metrics import METRICS
from cloakbench.protect import PROTECTIONS
from cloakbench.purify import PURIFIERS

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "EXTENDING.md"
EXAMPLE = REPO / "examples" / "plugin"
KINDS = {"blur_cloak.py": "BlurCloak", "median.py": "Median", "sharpness.py": "Sharpness"}
QUOTE = re.compile(r"^<!-- quote: (\S+) -->\n```[\w-]*\n(.*?)^```$", re.S | re.M)


def path_name(file: str) -> str:
    """The name a grid gives an example class by its file (relative to the repository root)."""
    return f"examples/plugin/cloakbench_example/{file}:{KINDS[file]}"


@pytest.fixture()
def registries():
    """Put the registries back as they were: a loaded plugin stays registered for the process (other tests compare
    the registered names with their own lists)."""
    saved = [(reg, dict(reg._entries), reg._plugins_read) for reg in (PROTECTIONS, PURIFIERS, METRICS)]
    yield
    for reg, entries, read in saved:
        reg._entries.clear()
        reg._entries.update(entries)
        reg._plugins_read = read


@pytest.fixture()
def one_thread():
    """Torch on one thread, and this process on one core while the test runs (a bench run folder sizes its stages'
    threads from the cores the process may use)."""
    threads = torch.get_num_threads()
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    torch.set_num_threads(1)
    if allowed:
        os.sched_setaffinity(0, {min(allowed)})
    yield
    torch.set_num_threads(threads)
    if allowed:
        os.sched_setaffinity(0, allowed)


# ------------------------------------------------------------------ (a) the guide quotes the files as they are
def test_quoted_code_is_the_example_files():
    text = GUIDE.read_text()
    quoted = {}
    for m in QUOTE.finditer(text):
        path = REPO / m.group(1)
        assert path.is_file(), f"EXTENDING.md quotes {m.group(1)}, which does not exist"
        assert m.group(2) == path.read_text(), f"EXTENDING.md's copy of {m.group(1)} differs from the file: re-paste it"
        quoted[m.group(1)] = m.group(2)
    wanted = {f"examples/plugin/cloakbench_example/{f}" for f in KINDS} | {
        "examples/plugin/pyproject.toml", "examples/plugin/grid.yaml", "examples/plugin/tests/test_cloakbench_example.py"}
    assert wanted <= set(quoted), f"not quoted: {sorted(wanted - set(quoted))}"
    # every other mention of an example path names a file that exists, and `file.py:Class` a class defined in it
    for ref in set(re.findall(r"examples/[\w/.-]+\.\w+(?::\w+)?", text)):
        file, _, cls = ref.partition(":")
        assert (REPO / file).is_file(), f"EXTENDING.md names {file}, which does not exist"
        if cls:
            classes = {n.name for n in ast.walk(ast.parse((REPO / file).read_text())) if isinstance(n, ast.ClassDef)}
            assert cls in classes, f"EXTENDING.md names {ref}: no class {cls} in {file}"
    # the entry-point names the guide uses are the package's, and each equals its class's `name`
    entry = {}
    for group, names in tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"][
            "entry-points"].items():
        for name, target in names.items():
            entry[name] = (group, target)
            module, _, cls = target.partition(":")
            source = (EXAMPLE / (module.replace(".", "/") + ".py")).read_text()
            assert re.search(rf'class {cls}\(.*?\n    name = "{re.escape(name)}"', source, re.S), (name, target)
    assert set(entry) == {"blur-cloak", "median", "sharpness"}
    assert {g for g, _ in entry.values()} == {"cloakbench.protections", "cloakbench.purifiers", "cloakbench.metrics"}


# ------------------------------------------------------------------ (b) the example runs
def test_the_examples_own_tests_pass(monkeypatch, registries, one_thread):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    path = EXAMPLE / "tests" / "test_cloakbench_example.py"
    spec = importlib.util.spec_from_file_location("cloakbench_example_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    assert len(tests) == 3
    for test in tests:
        test()


def test_the_guides_grid_runs_by_path_names(tmp_path, monkeypatch, registries, one_thread):
    from typer.testing import CliRunner

    from cloakbench.bench.store import read_rows
    from cloakbench.bench.verdict import measured_budgets
    from cloakbench.cli import app

    cfg = yaml.safe_load((EXAMPLE / "grid.yaml").read_text())
    assert [p["method"] for p in cfg["protections"]] == ["none", path_name("blur_cloak.py")]
    assert cfg["purifications"] == ["none", path_name("median.py")] and cfg["metrics"] == [path_name("sharpness.py")]
    monkeypatch.chdir(REPO)  # path names are read from the folder cloakbench runs in, as the guide says
    res = CliRunner().invoke(app, ["bench", "examples/plugin/grid.yaml", "--out", str(tmp_path / "run")],
                             terminal_width=160)
    assert res.exit_code == 0, res.output
    blur = f"{path_name('blur_cloak.py')}@8/255"
    rows = read_rows(tmp_path / "run" / "results.sqlite")
    assert {(r["protection"], r["purification"]) for r in rows if r["metric"] == "sharpness"} == {
        ("none", "none"), (blur, "none"), (blur, path_name("median.py"))}
    assert all(r["value"] is not None and math.isfinite(r["value"]) and r["value"] > 0 and r["n"] == 2 for r in rows)
    # the protection's budget, measured on the saved PNGs, is within its 8/255 and it did perturb
    budget = measured_budgets(tmp_path / "run")[blur]
    assert 1 <= budget["linf_255"] <= 8 and budget["nominal"] == "8/255"
    # options reached the components (protections[].options, purify_options)
    art = tmp_path / "run" / "artifacts"
    [prot] = [json.loads(p.read_text()) for p in art.glob("protect-*/protection.json")]
    [pur] = [json.loads(p.read_text()) for p in art.glob("purify-*/purification.json")]
    assert prot["method"] == "blur-cloak" and prot["config"]["sigma"] == 1.0 and prot["steps"] == 4
    assert pur["config"]["method"] == "median" and pur["config"]["size"] == 3
    # the plugin metric has its direction in the verdict, read from the run folder (a new process would not know
    # the path-named class): the sharpness row is judged, not "no metric with a direction"
    verdict = json.loads((tmp_path / "run" / "verdict.json").read_text())
    assert "sharpness" in json.dumps(verdict) and "no metric with a direction" not in json.dumps(verdict)
    from cloakbench.bench.verdict import compute

    assert compute(tmp_path / "run")["headline"] == "sharpness"


# ------------------------------------------------------------------ (c) installed, the entry points are found
LIST = """
import sys
import yaml
from typer.testing import CliRunner
from cloakbench.cli import app
from cloakbench.bench import load_config

assert "cloakbench_example" not in sys.modules
for kind, name in [("protections", "blur-cloak"), ("purifiers", "median"), ("metrics", "sharpness")]:
    res = CliRunner().invoke(app, ["list", kind, "--filter", name], terminal_width=240)
    print(kind, res.exit_code, " ".join(res.output.split()))
print("from", sys.modules["cloakbench_example"].__file__)
cfg = load_config(sys.argv[1])  # every name checked through the entry points
print("grid", [p.method for p in cfg.protections], cfg.purifications, cfg.metrics)
"""


def test_the_installed_package_is_listed_by_its_entry_points(tmp_path):
    source = shutil.copytree(EXAMPLE, tmp_path / "src")  # setuptools writes build/ and *.egg-info beside the sources
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (target / "cloakbench_example" / "blur_cloak.py").is_file()
    installed = (EXAMPLE / "grid.yaml").read_text()
    for file, cls in KINDS.items():
        installed = installed.replace(path_name(file), {"blur_cloak.py": "blur-cloak"}.get(file, file[:-3]))
    (tmp_path / "grid.yaml").write_text(installed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1", "COLUMNS": "240"}  # rich's console reads its width from COLUMNS
    out = subprocess.run([sys.executable, "-c", LIST, str(tmp_path / "grid.yaml")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    for kind, name in [("protections", "blur-cloak"), ("purifiers", "median"), ("metrics", "sharpness")]:
        assert lines[kind].startswith("0 ") and f"│ {name} │" in lines[kind] and f"1 {kind}" in lines[kind], lines[kind]
    for kind, target_ in [("protections", "blur_cloak:BlurCloak"), ("purifiers", "median:Median")]:
        assert f"(plugin: entry point cloakbench_example.{target_})" in lines[kind], lines[kind]
    assert "8/255" in lines["protections"] and "size=3" in lines["purifiers"] and "higher" in lines["metrics"]
    assert lines["from"].startswith(str(target))
    assert lines["grid"] == "['none', 'blur-cloak'] ['none', 'median'] ['sharpness']"
