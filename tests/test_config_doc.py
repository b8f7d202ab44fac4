"""docs/CONFIG.md is the reference of every bench key, rendered from the config models: it must match them, and
every key needs a meaning (the docstring under its field in bench/config.py)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from cloakbench.bench.config import BenchConfig
from cloakbench.bench.config_doc import COMMAND, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def reachable(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model inside ``root``'s annotations (nested, in lists, dicts and unions), walked here on its own so
    that a model the generator misses is caught."""
    seen: list[type[BaseModel]] = []

    def visit(tp) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.append(tp)
                for field in tp.model_fields.values():
                    visit(field.annotation)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return seen


def rows(doc: str, model: type[BaseModel]) -> dict[str, list[str]]:
    """The table rows of ``model``'s section: key -> [type, default, meaning]."""
    lines = doc.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("## ") and line.endswith(f"({model.__name__})")]
    assert len(starts) == 1, f"{model.__name__}: {len(starts)} sections in the rendered reference, not 1"
    out = {}
    for line in lines[starts[0] + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").replace("\\|", "\0").split("|")]
            out[cells[0].strip("`")] = [c.replace("\0", "|") for c in cells[1:]]
    return out


def undocumented(root: type[BaseModel]) -> list[str]:
    """``Model.key`` of every field missing from the rendered reference or without a meaning there."""
    doc = render(root)
    problems = []
    for model in reachable(root):
        table = rows(doc, model)
        for key in model.model_fields:
            if key not in table:
                problems.append(f"{model.__name__}.{key}: not in the reference")
            elif len(table[key]) != 3 or not table[key][2]:
                problems.append(f"{model.__name__}.{key}: no meaning")
    return problems


def test_config_md_is_rendered_from_the_models():
    assert DOC.is_file(), f"docs/CONFIG.md is missing; generate it: {COMMAND}"
    assert DOC.read_text() == render(), f"docs/CONFIG.md is stale (the config models changed); regenerate it: {COMMAND}"


def test_every_key_of_every_model_has_a_meaning():
    models = reachable(BenchConfig)
    assert {m.__name__ for m in models} >= {"BenchConfig", "DataConfig", "WorldData", "ProtectionSpec", "RecipeSpec",
                                            "SamplingSpec"}
    problems = undocumented(BenchConfig)
    assert not problems, ("keys without a description; add a docstring under each field in "
                          f"src/cloakbench/bench/config.py, then {COMMAND}:\n  " + "\n  ".join(problems))


def test_a_key_without_a_description_is_caught():
    from cloakbench.bench.config import RecipeSpec, Strict

    class Dummy(Strict):
        documented: int = 1
        """A documented key."""
        bare: int = 0

    class Recipe(RecipeSpec):
        extra: Dummy | None = None
        """A nested model behind a union."""

    class Grid(BenchConfig):
        recipes: list[Recipe]
        """Recipes with one more key."""

    problems = undocumented(Grid)
    assert "Dummy.bare: no meaning" in problems
    assert not [p for p in problems if p.startswith(("Dummy.documented", "Recipe.", "Grid."))]


@pytest.mark.parametrize("key, type_, default", [("executor", '`"local" | "ray"`', '`"local"`'),
                                                  ("protections", "list\\[[ProtectionSpec](#protections-protectionspec)\\] "
                                                   "(at least 1)", "required"),
                                                  ("seeds", "`list[int (>= 0, <= 4294967295)]`", "`[0]`")])
def test_types_and_defaults_read_as_yaml(key, type_, default):
    assert rows(render(), BenchConfig)[key][:2] == [type_, default]
