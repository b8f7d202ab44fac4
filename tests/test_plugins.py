"""Open registries (#36 item 2): a protection, purifier or metric written outside the package is named
``path/file.py:Class`` or ``module:Class``, or installed through an entry point, and runs in a grid."""

from __future__ import annotations

import textwrap

import pytest

from cloakbench.errors import UnknownNameError
from cloakbench.protect import PROTECTIONS
from cloakbench.purify import PURIFIERS

PLUGIN = '''
from cloakbench.protect.random_noise import RandomNoise
from cloakbench.purify.base import Purifier


class MyNoise(RandomNoise):
    """A protection written outside cloakbench (here: random noise under another name)."""

    name = "my-noise"
    paper = "a test plugin"


class Halve(Purifier):
    name = "halve"
    paper = "a test plugin purifier"

    def purify(self, images):
        return images * 0.5


class NeedsMissing(Halve):
    """A purifier that names its reference code and a package nobody has."""

    reference = "someone/their-repo purify/needs.py"
    requires = ("no_such_package_xyz", "numpy")


def not_a_class(**kw):
    raise SystemExit("a name must never call an arbitrary function")
'''


@pytest.fixture()
def plugin(tmp_path):
    """The plugin file; the registries are put back as they were afterwards (a loaded plugin stays registered for
    the process, which would leak into other tests)."""
    path = tmp_path / "myplugin.py"
    path.write_text(textwrap.dedent(PLUGIN))
    saved = {reg: dict(reg._entries) for reg in (PROTECTIONS, PURIFIERS)}
    yield path
    for reg, entries in saved.items():
        reg._entries.clear()
        reg._entries.update(entries)


def test_path_names_load_subclasses_only(plugin):
    entry = PROTECTIONS.get(f"{plugin}:MyNoise")
    assert entry.factory.name == "my-noise" and entry.meta["plugin"] == f"{plugin}:MyNoise"
    assert f"{plugin}:Halve" in PURIFIERS
    with pytest.raises(UnknownNameError, match="not a Protection subclass"):
        PROTECTIONS.get(f"{plugin}:not_a_class")
    with pytest.raises(UnknownNameError, match="cannot load Nope"):
        PROTECTIONS.get(f"{plugin}:Nope")
    with pytest.raises(UnknownNameError, match="does not exist"):
        PROTECTIONS.get(f"{plugin.parent / 'missing.py'}:X")


def test_entry_points_are_discovered(monkeypatch, plugin):
    import importlib.metadata
    import sys

    from cloakbench.registry import Registry
    from cloakbench.protect.base import Protection

    sys.path.insert(0, str(plugin.parent))
    monkeypatch.setattr(sys, "path", sys.path)

    class EP:
        name, value = "their-noise", "myplugin:MyNoise"

        def load(self):
            import myplugin

            return myplugin.MyNoise

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [EP()] if group == "g.test" else [])
    reg = Registry("protection", base=Protection, group="g.test")
    assert "their-noise" in reg.names() and reg.get("their-noise").meta["plugin"] == "entry point myplugin:MyNoise"


def test_a_broken_entry_point_is_named_when_asked_for_and_spares_the_others(monkeypatch, plugin, caplog):
    """One installed plugin that fails to import must not hide the others; asking for it names its error; an
    entry point with a built-in's name is ignored with a warning."""
    import importlib.metadata
    import sys

    from cloakbench.protect.base import Protection
    from cloakbench.registry import Registry

    sys.path.insert(0, str(plugin.parent))
    monkeypatch.setattr(sys, "path", sys.path)

    class EP:
        def __init__(self, name, value, load):
            self.name, self.value, self.load = name, value, load

    def broken():
        raise ImportError("No module named 'torchvision_nightly'")

    def good():
        import myplugin

        return myplugin.MyNoise

    eps = [EP("broken-one", "theirs:Broken", broken), EP("their-noise", "myplugin:MyNoise", good),
           EP("aspl", "myplugin:MyNoise", good)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: eps if group == "g.test" else [])
    reg = Registry("protection", base=Protection, group="g.test")
    reg.register("aspl")(Protection)
    with caplog.at_level("WARNING"):
        assert reg.names() == ["aspl", "their-noise"]
    assert "'aspl' (myplugin:MyNoise) is ignored: the name is taken by a built-in" in caplog.text
    with pytest.raises(UnknownNameError, match=r"'broken-one' \(theirs:Broken.*torchvision_nightly"):
        reg.get("broken-one")


def test_a_plugin_protection_and_purifier_run_in_a_grid(tmp_path, plugin):
    import yaml

    from cloakbench.bench import Runner, load_config
    from cloakbench.bench.store import read_rows
    from test_reliability import photos

    photos(tmp_path / "data" / "id1" / "clean", names=[f"{i}.png" for i in range(4)])
    cfg = {"name": "plugins", "model": "tiny", "resolution": 64,
           "data": {"root": str(tmp_path / "data"), "identities": ["id1"]},
           "protections": [{"method": "none"}, {"method": f"{plugin}:MyNoise", "eps": "8/255"}],
           "purifications": ["none", f"{plugin}:Halve"],
           "recipes": [{"name": "db", "steps": 2, "prior": False}],
           "sampling": {"n": 1, "steps": 2, "prompts": ["a photo of sks person"]}, "metrics": ["brisque"]}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = Runner(load_config(path), tmp_path / "run", device="cpu")
    runner.execute()
    rows = read_rows(tmp_path / "run" / "results.sqlite")
    assert {(r["protection"].split("@")[-1], r["purification"].rpartition(":")[2]) for r in rows} == {
        ("none", "none"), ("8/255", "none"), ("8/255", "Halve")}
    bad = dict(cfg, protections=[{"method": f"{plugin}:not_a_class"}])
    path.write_text(yaml.safe_dump(bad))
    from cloakbench.errors import ConfigError

    with pytest.raises(ConfigError, match="not a Protection subclass"):
        load_config(path)


def test_list_command_names_what_exists(plugin, monkeypatch):
    from typer.testing import CliRunner

    from cloakbench.cli import app
    from cloakbench.cli._common import console

    PROTECTIONS.get(f"{plugin}:MyNoise")  # a loaded plugin is listed as one
    res = CliRunner().invoke(app, ["list", "protections", "--filter", "*noise*"], terminal_width=120)
    flat = " ".join(res.output.split())
    assert res.exit_code == 0 and "random-noise" in flat and "plugin:" in flat and "aspl" not in flat
    res = CliRunner().invoke(app, ["list", "metrics"], terminal_width=120)
    assert res.exit_code == 0 and "verified" in res.output and "higher" in res.output
    res = CliRunner().invoke(app, ["list", "nosuch"], terminal_width=120)
    assert res.exit_code == 2
    # a plugin shows its class's reference and needed packages, a missing one marked so, at any width
    PURIFIERS.get(f"{plugin}:NeedsMissing")
    for width in (80, 200):  # two columns (name, the rest one a line), then the table
        monkeypatch.setattr(console, "_width", width)  # rich's width (CliRunner's terminal_width is click's)
        res = CliRunner().invoke(app, ["list", "purifiers", "--filter", "*needsmissing"], terminal_width=width)
        flat = " ".join(res.output.split())
        assert res.exit_code == 0 and "1 purifiers" in flat and "numpy+" in flat, res.output
        assert all(s in flat for s in ("someone/their-repo", "no_such_package_xyz", "(missing)")), res.output
    assert "someone/their-repo purify/needs.py" in flat and "no_such_package_xyz (missing)" in flat, res.output
    res = CliRunner().invoke(app, ["list", "purifiers"], terminal_width=200)
    flat = " ".join(res.output.split())
    assert all(s in flat for s in ("diffshortcut/defenses/jpeg.py", "sczhou/CodeFormer", "inference_codeformer.py"))


MODEL_PLUGIN = '''
from cloakbench.models.sources import ModelSource, Tiny


class MyTiny(Tiny):
    """A model source written outside cloakbench (here: the tiny model under another name)."""

    paper = "a test model plugin"


class NotASource:
    pass
'''


def test_a_plugin_model_loads_where_a_model_is_named(tmp_path):
    """Models are a registry like the others (#36 item 2): ``file.py:Class`` of a ``ModelSource`` subclass is a model
    name for load_model, the CLI and a grid's ``model:``; another class is refused by name; the built-ins list."""
    from typer.testing import CliRunner

    from cloakbench.cli import app
    from cloakbench.models import MODELS, load_model

    path = tmp_path / "mymodels.py"
    path.write_text(textwrap.dedent(MODEL_PLUGIN))
    saved = dict(MODELS._entries)
    try:
        model = load_model(f"{path}:MyTiny", device="cpu")
        assert model.source.startswith("tiny") and sum(p.numel() for p in model.unet.parameters()) > 0
        with pytest.raises(UnknownNameError, match="not a ModelSource subclass"):
            load_model(f"{path}:NotASource")
        res = CliRunner().invoke(app, ["sample", "--model", f"{path}:MyTiny", "-n", "1", "--steps", "2",
                                       "--prompt", "a photo of sks person", str(tmp_path / "s")])
        assert res.exit_code == 0, res.output
        assert len(list((tmp_path / "s").glob("*.png"))) == 1
        res = CliRunner().invoke(app, ["list", "models"], terminal_width=120)
        flat = " ".join(res.output.split())
        assert res.exit_code == 0 and all(n in flat for n in ("tiny", "mini", "sd21-base", "32 px", "plugin:"))
    finally:
        MODELS._entries.clear()
        MODELS._entries.update(saved)
