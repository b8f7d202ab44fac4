"""The ``cloakbench`` command line (typer): one module per command group, argument parsing only; each command is a
thin layer over the Python API. Imports of the library are lazy (inside the commands), so ``--help`` is quick.

Groups (help panels): ``make`` (protect, purify), ``personalize`` (train, sample), ``bench`` (bench, audit, report,
export), ``measure`` (evaluate, calibrate, analyze), ``mini`` (mini, demo), ``setup`` (list, doctor, weights)."""

from __future__ import annotations

import errno
import logging

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from ..errors import CloakbenchError

PANELS = ("Make images", "Fine-tune and sample", "Benchmark", "Measure and analyze", "Mini stack", "Set up")


class CleanErrors(typer.core.TyperGroup):
    """Turn the project's own errors (:class:`~cloakbench.errors.CloakbenchError`) and missing files into a
    one-paragraph message and exit code 2, not a traceback; list the commands under their panels (plain-text help
    has no rich panels)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CloakbenchError, FileNotFoundError) as exc:
            Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except OSError as exc:  # the machine refused a write: full or read-only disk, a name too long, no access
            if exc.errno not in _DISK_ERRORS:
                raise
            Console(stderr=True).print(f"[red]error:[/red] {escape(disk_error(exc))}")
            raise typer.Exit(2) from None

    def format_commands(self, ctx, formatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            panel = getattr(cmd, "rich_help_panel", None) or "Commands"
            rows.setdefault(panel, []).append((name, cmd.get_short_help_str(formatter.width - 6 - 14)))
        for panel in sorted(rows, key=lambda p: PANELS.index(p) if p in PANELS else len(PANELS)):
            with formatter.section(panel):
                formatter.write_dl(rows[panel])


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}


def disk_error(exc: OSError) -> str:
    """One line for a write the machine refused, naming the file and what to do. Outputs are written beside their
    place and renamed into it, so what was there before is untouched and nothing half-written is left."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.ENAMETOOLONG: "the name is too long for the file system"}
    name = exc.filename or "(a file)"
    if exc.errno == errno.ENAMETOOLONG and len(str(name)) > 100:
        name = f"{str(name)[:60]}...{str(name)[-30:]} ({len(str(name))} characters)"
    return (f"{name}: {what[exc.errno]} ({exc.strerror}); nothing was left half-written: free space, choose "
            "another output folder or a shorter name, and rerun (a run folder resumes)")


app = typer.Typer(
    cls=CleanErrors,
    name="cloakbench",
    help="Red-team and benchmark protective perturbations against personalized diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help is plain text: "ism[dlib]" and "cloakbench[parquet]" print as written
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    from ..progress import quiet_libraries

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # the libraries' own bars would tear our rich progress display
        quiet_libraries()


from . import make, personalize, bench, measure, mini, setup  # noqa: E402  (each adds its commands to app)

__all__ = ["app", "make", "personalize", "bench", "measure", "mini", "setup"]
