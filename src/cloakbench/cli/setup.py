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


def _needs(factory) -> str:
    """The packages a component needs beyond the core (its ``requires`` import names), each marked present (+) or
    missing (-)."""
    import importlib.util

    names = getattr(factory, "requires", ()) or ()
    return " ".join(f"{n}{'+' if importlib.util.find_spec(n) is not None else ' (missing)'}" for n in names) or "-"


def _row(kind: str, e) -> tuple[str, ...]:
    """One table row of entry ``e`` of registry ``kind``."""
    from ..images import format_budget

    f = e.factory
    paper = str(getattr(f, "paper", "") or e.meta.get("paper", "")) + (f" (plugin: {e.meta['plugin']})"
                                                                       if e.meta.get("plugin") else "")
    if kind == "protections":
        return e.name, paper, format_budget(f.eps), str(f.steps), _needs(f)
    if kind == "purifiers":
        return e.name, paper, ", ".join(f"{k}={v}" for k, v in getattr(f, "options", {}).items()) or "-", _needs(f)
    if kind == "models":
        return e.name, paper, f"{f.resolution} px", f.source or "-", _needs(f)
    needs = ", ".join(n for n, on in (("face", f.needs_face), ("references", f.needs_reference)) if on) or "-"
    return e.name, {True: "higher", False: "lower", None: "-"}[f.higher_better], needs, f.licence, _needs(f)


@app.command("list", rich_help_panel=PANEL)
def list_entries(
    kind: str = typer.Argument("protections", help=f"{', '.join(KINDS[:-1])} or {KINDS[-1]}."),
    filter_: str = typer.Option(None, "--filter", help="Only names matching this glob, e.g. 'aspl*'."),
) -> None:
    """What exists: every protection, purifier, metric or model (installed plugins included) with its paper, its
    defaults and the packages it needs (present or missing). Code outside the package is named module:Class or
    path/file.py:Class (docs/EXTENDING.md)."""
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
    heads = {"protections": ("name", "paper", "budget", "steps", "needs"), "purifiers": ("name", "paper", "options",
             "needs"), "metrics": ("name", "better", "input", "licence", "needs"),
             "models": ("name", "paper", "resolution", "weights", "needs")}[kind]
    table = Table(title=f"cloakbench {kind}")
    for h in heads:
        table.add_column(h, overflow="fold")
    shown = 0
    for e in registry.entries():
        if filter_ and not fnmatch.fnmatch(e.name, filter_.lower()):
            continue
        table.add_row(*(Text(c) for c in _row(kind, e)))
        shown += 1
    console.print(table)
    console.print(f"{shown} {kind}", markup=False, highlight=False)


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
