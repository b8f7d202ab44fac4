"""docs/CONFIG.md, the reference of every bench YAML key, rendered from the pydantic models of :mod:`.config`.

Each key's meaning is its field's description (the docstring under the field in ``config.py``); its type,
default and constraints are read from the model. Regenerate after changing a model::

    python -m cloakbench.bench.config_doc > docs/CONFIG.md

``tests/test_config_doc.py`` fails while the file and :func:`render` differ, or while a key has no description.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import BenchConfig

COMMAND = "python -m cloakbench.bench.config_doc > docs/CONFIG.md"

INTRO = """\
# Bench configuration reference

*Generated from the models of `src/cloakbench/bench/config.py` (a key's meaning is the docstring under its
field) by `{command}`; do not edit by hand: tests/test_config_doc.py fails while this file is stale.*

A bench YAML describes one grid: identities x protections x purifications (red teams) x training recipes x
QES x seeds, and the metrics (`cloakbench bench CONFIG --out RUN`; `--dry-run` prints the plan). Every
problem in a file (unknown keys, unknown names, missing folders, impossible values) is reported at once,
with its key, before any work starts. Conventions:

- Budgets are L-inf radii in [0, 1] image units, written `"k/255"` (`eps: 8/255`); images are in [0, 1].
- Relative paths are relative to the YAML file.
- Protection, purifier and metric names: `cloakbench list`; plugins are named `module:Class`.
- `null` as a default: the key is unset, and its meaning says what that stands for.

Examples: `configs/quick.yaml` (the mini world, two minutes on a CPU), `configs/paper-faces.yaml` (the
paper's protocol, cell for cell).
"""


def sections(root: type[BaseModel] = BenchConfig) -> list[tuple[type[BaseModel], list[str]]]:
    """Every model reachable from ``root`` (through nested models, lists, unions), depth first in field order,
    each with the YAML paths it is found at (``""`` for the top level, ``protections[]`` for a list's items)."""
    found: dict[type[BaseModel], list[str]] = {}

    def walk(model: type[BaseModel], path: str) -> None:
        first = model not in found
        found.setdefault(model, []).append(path)
        if not first:
            return
        for key, field in model.model_fields.items():
            for sub, suffix in _nested(field.annotation):
                walk(sub, f"{path}.{key}{suffix}" if path else f"{key}{suffix}")

    walk(root, "")
    return list(found.items())


def _nested(tp: Any, suffix: str = "") -> list[tuple[type[BaseModel], str]]:
    """The models inside annotation ``tp``, each with the path suffix of where it sits (``[]`` in a list)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(tp, suffix)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set, frozenset):
        return [x for a in args if a is not Ellipsis for x in _nested(a, suffix + "[]")]
    if origin is dict:
        return _nested(args[1], suffix + ".<name>") if len(args) == 2 else []
    return [x for a in args for x in _nested(a, suffix)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading (lowercase; punctuation but ``-`` and ``_`` dropped; spaces to ``-``)."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def heading(model: type[BaseModel], paths: list[str]) -> str:
    """A section's title: the YAML paths of the model, then its name (``data.world (WorldData)``)."""
    return f"{', '.join(p or 'top level' for p in paths)} ({model.__name__})"


def _type(tp: Any, anchors: dict[type[BaseModel], str], drop_none: bool) -> str:
    """A readable YAML type: ``int``, ``list[str]``, ``"local" | "ray"``, a model as a link to its section."""
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{anchors[tp]})"
    if tp is Path:
        return "path"
    if isinstance(tp, type) and tp in (str, int, float, bool):
        return tp.__name__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:  # a constrained item type: int (>= 0, <= 4294967295)
        inner = _type(args[0], anchors, drop_none)
        limits = _constraints(FieldInfo.from_annotation(tp))
        return f"{inner} ({limits})" if limits else inner
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        kept = [a for a in args if not (drop_none and a is type(None))]
        return " | ".join(_type(a, anchors, False) for a in kept)
    if origin in (list, tuple, set, frozenset):
        return f"list[{', '.join(_type(a, anchors, False) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"dict[{', '.join(_type(a, anchors, False) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _constraints(field: FieldInfo) -> str:
    out = []
    for m in field.metadata:
        for cls, sign, attr in ((at.Ge, ">=", "ge"), (at.Gt, ">", "gt"), (at.Le, "<=", "le"), (at.Lt, "<", "lt")):
            if isinstance(m, cls):
                out.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, at.MinLen):
            out.append(f"at least {m.min_length}")
        if isinstance(m, at.MaxLen):
            out.append(f"at most {m.max_length}")
    return ", ".join(out)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def markdown(text: str | None) -> str:
    """A docstring as one Markdown line: ``code`` as `code`, Sphinx roles (:mod:`x`) as `x`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", " ".join((text or "").split()))
    return text.replace("``", "`")


def meaning(field: FieldInfo) -> str:
    """A field's meaning in the reference: its description."""
    return markdown(field.description)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(root: type[BaseModel] = BenchConfig) -> str:
    """docs/CONFIG.md as it must read: the reference of ``root`` and every model inside it."""
    found = sections(root)
    headings = {model: heading(model, paths) for model, paths in found}
    anchors = {model: slug(h) for model, h in headings.items()}
    out = [INTRO.format(command=COMMAND)]
    out.append("Sections:\n\n" + "\n".join(f"- [{headings[m]}](#{anchors[m]})" for m, _ in found) + "\n")
    for model, _paths in found:
        out.append(f"## {headings[model]}\n")
        if doc := markdown(model.__doc__):
            out.append(doc + "\n")
        out.append("| key | type | default | meaning |")
        out.append("|---|---|---|---|")
        for key, field in model.model_fields.items():
            tp = _type(field.annotation, anchors, drop_none=field.default is None)
            tp = re.sub(r"^list\[(.*)\]$", r"list\\[\1\\]", tp) if "](#" in tp else f"`{tp}`"
            if limits := _constraints(field):
                tp += f" ({limits})"
            out.append(f"| `{key}` | {_cell(tp)} | {_cell(_default(field))} | {_cell(meaning(field))} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
