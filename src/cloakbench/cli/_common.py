"""What every command group shares: the console, the shared options (one name and one help for each), option
parsing, the one progress display of bench / demo / audit, and the verdict print."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

console = Console()

DEVICE_HELP = "cuda / mps / cpu (default: best available)."
RESOLUTION_HELP = "Resize + center-crop the inputs to this size in pixels"


def device_option(default: str | None = None, help: str = DEVICE_HELP):
    """``--device``: the same option on every command that computes."""
    return typer.Option(default, "--device", help=help)


def seed_option(help: str = "Seed: the same seed gives byte-identical files."):
    """``--seed``: one range on every command (0 to protocol.SEED_MAX)."""
    from .. import protocol

    return typer.Option(0, "--seed", min=0, max=protocol.SEED_MAX, help=help)


def fmt(v) -> str:
    """A metric value for a table: 4 decimals, ``n/a`` when missing."""
    return "n/a" if v is None else f"{v:.4f}"


def parse_options(items: list[str] | None) -> dict:
    """``["rounds=3", "target=/x.png", "using_target=true"]`` -> typed dict (JSON values when they parse)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"option {item!r} is not KEY=VALUE", param_hint="--option")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def inputs(folder: Path) -> list[Path]:
    """The image files of ``folder``, listed once for the destination check and the stage (none when it is not a
    folder of images: the stage, given the folder, says why)."""
    from ..errors import CloakbenchError
    from ..images import list_image_files

    try:
        return list_image_files(folder)
    except CloakbenchError:
        return []


def check_resolution(resolution: int, *, keep_allowed: bool = False) -> None:
    """A working resolution is a positive multiple of 8 (or 0, "keep sizes", where ``keep_allowed``)."""
    if (resolution == 0 and keep_allowed) or (resolution > 0 and resolution % 8 == 0):
        return
    what = "0 (keep sizes) or a positive multiple of 8" if keep_allowed else "a positive multiple of 8"
    raise typer.BadParameter(f"resolution {resolution} is not {what}", param_hint="--resolution")


@contextmanager
def stage_progress(runner, *, transient: bool = False):
    """The one progress display of bench, demo and audit: stages done / total, elapsed, time left, and the stage
    running in words (:meth:`~cloakbench.bench.Runner.describe`); yields the executors' ``progress`` callback.
    Stages already done count as done from the start."""
    from ..progress import progress_bar

    done = sum(runner.done(s) for s in runner.specs)
    with progress_bar(console, "steps", transient=transient) as bar:
        task = bar.add_task("stages", total=len(runner.specs) - done)

        def tick(spec, state):
            if state == "running":
                bar.update(task, description=runner.describe(spec))
            elif state != "skipped":
                bar.advance(task)

        yield tick


def print_verdict(run_dir: Path) -> None:
    """Compute, store (verdict.json, the verdict table of results.sqlite) and print the run's verdict."""
    from ..bench.verdict import compute, write
    from ..bench.verdict_view import tables

    verdict = compute(run_dir)
    path = write(run_dir, verdict)
    for table in tables(verdict, width=console.width):
        console.print(table)
    console.print(f"verdict: {path}", markup=False, highlight=False)
