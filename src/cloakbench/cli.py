"""The ``cloakbench`` command line (typer). Each command is a thin layer over the Python API."""

from __future__ import annotations

import json
import logging

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="cloakbench",
    help="Red-team and benchmark protective perturbations against personalized diffusion models.",
    no_args_is_help=True,
    add_completion=False,
)
weights_app = typer.Typer(help="List, fetch and verify external model weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
console = Console()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    smoke: bool = typer.Option(True, help="Build the tiny model and check its loss and gradient."),
) -> None:
    """Report versions, device, optional backends, weights and test data: what is present and missing."""
    from .doctor import as_json as to_json, run_checks

    checks = run_checks(smoke=smoke)
    if as_json:
        typer.echo(json.dumps(to_json(checks), indent=2))
    else:
        table = Table(title="cloakbench doctor")
        for col in ("group", "check", "status", "detail"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.group, c.name, "[green]ok[/green]" if c.ok else "[yellow]missing[/yellow]", c.detail)
        console.print(table)
    core_bad = [c.name for c in checks if c.group == "core" and not c.ok]
    if core_bad:
        console.print(f"[red]core problems: {', '.join(core_bad)}[/red]")
        raise typer.Exit(1)


@weights_app.command("list")
def weights_list() -> None:
    """Show every known weight file, its licence, and whether it is present under CLOAKBENCH_HOME."""
    from . import weights

    table = Table(title=f"weights under {weights.home() / 'weights'}")
    for col in ("name", "status", "size", "licence", "used by"):
        table.add_column(col, overflow="fold")
    for spec in weights.list_specs():
        present = weights.is_present(spec.name)
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
        table.add_row(spec.name, "[green]present[/green]" if present else "[yellow]missing[/yellow]", size,
                      spec.licence, spec.used_by)
    console.print(table)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(..., help="Weight names (see `cloakbench weights list`)."),
    force: bool = typer.Option(False, help="Download again even if present."),
    allow_unverified: bool = typer.Option(False, help="Allow entries with no published sha256."),
) -> None:
    """Download weights, verify SHA-256, and move them into place atomically."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from . import weights

    failed = False
    for name in names:
        try:
            spec = weights.get_spec(name)
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=console) as progress:
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
    from . import weights

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


if __name__ == "__main__":  # pragma: no cover
    app()
