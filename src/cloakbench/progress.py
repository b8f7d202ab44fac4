"""One progress display for every long command: a rich bar on a terminal.

``progress_bar(console, kind)`` gives the columns of one kind of work: ``"steps"`` (done / total,
elapsed, remaining), ``"count"`` (done / total), ``"stages"`` (done / total, elapsed) and ``"download"``
(bytes, speed). ``transient`` bars disappear when they finish.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

COLUMNS = {
    "steps": lambda: (MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()),
    "count": lambda: (MofNCompleteColumn(),),
    "stages": lambda: (MofNCompleteColumn(), TimeElapsedColumn()),
    "download": lambda: (DownloadColumn(), TransferSpeedColumn()),
}


def progress_bar(console: Console, kind: str = "steps", *, transient: bool = False) -> Progress:
    """A rich :class:`~rich.progress.Progress` (use as a context manager) with the columns of ``kind``."""
    if kind not in COLUMNS:
        raise ValueError(f"progress kind must be one of {sorted(COLUMNS)}, not {kind!r}")
    return Progress("[progress.description]{task.description}", BarColumn(), *COLUMNS[kind](), console=console,
                    transient=transient)
