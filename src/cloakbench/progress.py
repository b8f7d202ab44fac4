"""One progress display for every long command: a rich bar on a terminal, plain lines in a log.

``progress_bar(console, kind)`` gives the columns of one kind of work: ``"steps"`` (done / total,
elapsed, remaining), ``"count"`` (done / total), ``"stages"`` (done / total, elapsed) and ``"download"``
(bytes, speed). ``transient`` bars disappear when they finish. When the console is not a terminal (a
log file, CI), a bar would print nothing until the end, so :class:`LineProgress` prints one line per task
every ``$CLOAKBENCH_PROGRESS_SECONDS`` (default 30) seconds and when it completes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

COLUMNS = {
    "steps": lambda: (MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()),
    "count": lambda: (MofNCompleteColumn(),),
    "stages": lambda: (MofNCompleteColumn(), TimeElapsedColumn()),
    "download": lambda: (DownloadColumn(), TransferSpeedColumn()),
}


def progress_bar(console: Console, kind: str = "steps", *, transient: bool = False) -> Progress | LineProgress:
    """A rich :class:`~rich.progress.Progress` (use as a context manager) with the columns of ``kind``, or
    a :class:`LineProgress` with the same methods when ``console`` is not a terminal."""
    if kind not in COLUMNS:
        raise ValueError(f"progress kind must be one of {sorted(COLUMNS)}, not {kind!r}")
    if not console.is_terminal:
        return LineProgress(console)
    return Progress("[progress.description]{task.description}", BarColumn(), *COLUMNS[kind](), console=console,
                    transient=transient)


class LineProgress:
    """``add_task`` / ``update`` / ``advance`` as rich's, printed as ``description: done/total (elapsed, time left)``
    lines at most every ``interval`` seconds per task, and once when a task completes."""

    def __init__(self, console: Console, interval: float | None = None) -> None:
        self.console = console
        self.interval = float(os.environ.get("CLOAKBENCH_PROGRESS_SECONDS", 30)) if interval is None else interval
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        now = time.monotonic()
        self.tasks.append({"description": description, "total": total, "completed": 0, "start": now, "shown": now,
                           "finished": False})
        return len(self.tasks) - 1

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, completed=self.tasks[task]["completed"] + advance)

    def update(self, task: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **_: Any) -> None:
        t = self.tasks[task]
        for key, value in (("completed", completed), ("total", total), ("description", description)):
            if value is not None:
                t[key] = value
        now = time.monotonic()
        done = t["total"] is not None and t["completed"] >= t["total"]
        if (done and not t["finished"]) or now - t["shown"] >= self.interval:
            t["shown"], t["finished"] = now, done
            total_text = "?" if t["total"] is None else f"{t['total']:g}"
            took = now - t["start"]
            left = ""
            if t["total"] is not None and 0 < t["completed"] < t["total"]:  # at the rate so far
                left = f", about {took / t['completed'] * (t['total'] - t['completed']):.0f} s left"
            self.console.print(f"{t['description']}: {t['completed']:g}/{total_text} ({took:.0f} s{left})",
                               markup=False, highlight=False)


def quiet_libraries() -> None:
    """Turn off diffusers / transformers / huggingface_hub progress bars (they would tear ours)."""
    import importlib

    for mod, fn in (("diffusers.utils.logging", "disable_progress_bar"), ("transformers.utils.logging", "disable_progress_bar"),
                    ("huggingface_hub.utils", "disable_progress_bars")):
        try:
            getattr(importlib.import_module(mod), fn)()
        except (ImportError, AttributeError):
            pass
