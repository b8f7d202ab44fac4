"""``list``, ``doctor`` and ``weights`` (list, fetch, verify): what exists, what is installed, what is missing."""

from __future__ import annotations

import json

import typer

from . import app
from ._common import console

PANEL = "Set up"

weights_app = typer.Typer(help="List, fetch and verify external model weights.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(weights_app, name="weights", rich_help_panel=PANEL)


KINDS = ("protections", "purifiers", "metrics", "models")


def _needs(factory) -> list[str]:
    """The packages a component needs beyond the core (its ``requires`` import names), each marked present (+) or
    missing."""
    import importlib.util

    names = getattr(factory, "requires", ()) or ()
    return [f"{n}{'+' if importlib.util.find_spec(n) is not None else ' (missing)'}" for n in names]


def _row(kind: str, e) -> dict[str, str]:
    """The cells of entry ``e`` of registry ``kind``, by column head."""
    from ..images import format_budget

    f = e.factory
    paper = str(getattr(f, "paper", "") or e.meta.get("paper", "")) + (f" (plugin: {e.meta['plugin']})"
                                                                       if e.meta.get("plugin") else "")
    row = {"name": e.name, "paper": paper, "reference": str(getattr(f, "reference", "") or "-")}
    if kind == "protections":
        row |= {"budget": format_budget(f.eps), "steps": str(f.steps)}
    elif kind == "purifiers":
        row["options"] = ", ".join(f"{k}={v}" for k, v in getattr(f, "options", {}).items()) or "-"
    elif kind == "models":
        row |= {"resolution": f"{f.resolution} px", "weights": f.source or "-"}
    else:
        row |= {"better": {True: "higher", False: "lower", None: "-"}[f.higher_better], "licence": f.licence,
                "input": ", ".join(n for n, on in (("face", f.needs_face), ("references", f.needs_reference)) if on)
                or "-"}
    return row | {"needs": "\n".join(_needs(f)) or "-"}


HEADS = {"protections": ("name", "paper", "reference", "budget", "steps", "needs"),
         "purifiers": ("name", "paper", "reference", "options", "needs"),
         "metrics": ("name", "better", "input", "licence", "reference", "needs"),
         "models": ("name", "paper", "reference", "resolution", "weights", "needs")}
PROSE = {"paper", "options", "licence"}  # columns of running text: they wrap at spaces, given this many characters
PROSE_WIDTH, WORD_WIDTH = 24, 30


def _min_widths(rows: list[dict[str, str]], heads) -> dict[str, int]:
    """Per column, the width below which its head or cells would fold inside words (their longest word, at most 30;
    the running-text columns 24)."""
    def longest(h: str) -> int:
        return max(len(w) for w in [h, *(w for r in rows for w in r[h].split())])

    return {h: PROSE_WIDTH if h in PROSE else min(WORD_WIDTH, longest(h)) for h in heads}


def _stacked(row: dict[str, str], heads) -> str:
    """The cells ``heads`` of a row, one a line and labelled (but the paper), for a terminal too narrow for the
    table."""
    return "\n".join(row[h].replace("\n", ", ") if h == "paper" else f"{h}: {row[h].replace(chr(10), ', ')}"
                     for h in heads)


@app.command("list", rich_help_panel=PANEL)
def list_entries(
    kind: str = typer.Argument("protections", help=f"{', '.join(KINDS[:-1])} or {KINDS[-1]}."),
    filter_: str = typer.Option(None, "--filter", help="Only names matching this glob, e.g. 'aspl*'."),
) -> None:
    """What exists: every protection, purifier, metric or model (installed plugins included) with its paper, its
    reference code, its defaults and the packages it needs (present or missing). Code outside the package is named
    module:Class or path/file.py:Class (docs/EXTENDING.md)."""
    import fnmatch

    from rich.table import Table
    from rich.text import Text

    if kind not in KINDS:
        raise typer.BadParameter(f"{kind!r}: give one of {', '.join(KINDS)}", param_hint="KIND")
    if kind == "protections":
        from ..protect import PROTECTIONS as registry
    elif kind == "purifiers":
        from ..purify import PURIFIERS as registry
    elif kind == "metrics":
        from ..metrics import METRICS as registry
    else:
        from ..models import MODELS as registry
    rows = [_row(kind, e) for e in registry.entries() if not filter_ or fnmatch.fnmatch(e.name, filter_.lower())]
    widths = _min_widths(rows, HEADS[kind])
    # the table when every column gets its width (3 more for the border and padding), else two columns: the name,
    # and the other cells one a line
    narrow = console.width < sum(w + 3 for w in widths.values()) + 1
    heads = ("name", ", ".join(HEADS[kind][1:])) if narrow else HEADS[kind]
    table = Table(title=f"cloakbench {kind}", show_lines=narrow)
    for h in heads:
        table.add_column(h, overflow="fold", min_width=widths.get(h),  # a long plugin path name folds
                         max_width=WORD_WIDTH if narrow and h == "name" else None)
    for row in rows:
        cells = (row["name"], _stacked(row, HEADS[kind][1:])) if narrow else (row[h] for h in heads)
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    console.print(f"{len(rows)} {kind}", markup=False, highlight=False)


@app.command(rich_help_panel=PANEL)
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    smoke: bool = typer.Option(True, help="Build the tiny model and check its loss and gradient."),
) -> None:
    """Report versions, device, optional backends, weights and test data: what is present and missing."""
    from rich.markup import escape
    from rich.table import Table

    from ..doctor import as_json as to_json, run_checks

    checks = run_checks(smoke=smoke)
    if as_json:
        typer.echo(json.dumps(to_json(checks), indent=2))
    else:
        table = Table(title="cloakbench doctor")
        for col in ("group", "check", "status", "detail"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.group, c.name, "[green]ok[/green]" if c.ok else "[yellow]missing[/yellow]",
                          escape(c.detail))  # install hints hold [extras] that rich would read as markup
        console.print(table)
    core_bad = [c.name for c in checks if c.group == "core" and not c.ok]
    if core_bad:
        console.print(f"[red]core problems: {', '.join(core_bad)}[/red]")
        raise typer.Exit(1)


@weights_app.command("list")
def weights_list() -> None:
    """Show every known weight file, its licence, and whether it is present under CLOAKBENCH_HOME."""
    from rich.table import Table

    from .. import weights

    table = Table(title=f"weights under {weights.home() / 'weights'}")
    for col in ("name", "status", "size", "licence", "used by"):
        table.add_column(col, overflow="fold")
    for spec in weights.list_specs():
        present = weights.is_present(spec.name)
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
        # the size is checked here (cheap); the digest by `weights verify` and `weights fetch`
        wrong = present and spec.size and weights.path_of(spec.name).stat().st_size != spec.size
        status = "[red]wrong size[/red]" if wrong else "[green]present[/green]" if present else "[yellow]missing[/yellow]"
        table.add_row(spec.name, status, size, spec.licence, spec.used_by)
    console.print(table)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(..., help="Weight names (see `cloakbench weights list`)."),
    force: bool = typer.Option(False, help="Download again even if present."),
    allow_unverified: bool = typer.Option(False, help="Allow entries with no published sha256."),
) -> None:
    """Download weights, verify SHA-256, and move them into place atomically."""
    from .. import weights
    from ..progress import progress_bar

    failed = False
    for name in names:
        try:
            spec = weights.get_spec(name)
            with progress_bar(console, "download") as progress:
                task = progress.add_task(name, total=spec.size)
                path = weights.fetch(name, force=force, allow_unverified=allow_unverified,
                                     progress=lambda done, total: progress.update(task, completed=done, total=total))
            console.print(f"[green]{name}[/green] -> {path}")
        except (KeyError, weights.WeightError) as exc:
            console.print(f"[red]{name}: {exc}[/red]")
            failed = True
    if failed:
        raise typer.Exit(1)


@weights_app.command("verify")
def weights_verify(names: list[str] = typer.Argument(None, help="Names; default: all present files.")) -> None:
    """Recompute SHA-256 of present files and compare with the registry."""
    from .. import weights

    names = names or [s.name for s in weights.list_specs() if weights.is_present(s.name)]
    bad = False
    for name in names:
        try:
            ok = weights.verify(name)
        except (KeyError, weights.WeightError) as exc:
            console.print(f"[red]{name}: {exc}[/red]")
            bad = True
            continue
        console.print(f"{name}: {'[green]ok[/green]' if ok else '[red]CHECKSUM MISMATCH[/red]'}")
        bad |= not ok
    if bad:
        raise typer.Exit(1)
