"""One progress display for every long command: a rich bar on a terminal, plain lines in a log.

``progress_bar(console, kind)`` gives the columns of one kind of work: ``"steps"`` (done / total,
elapsed, remaining), ``"count"`` (done / total), ``"stages"`` (done / total, elapsed) and ``"download"``
(bytes, speed). ``transient`` bars disappear when they finish. When the console is not a terminal (a
log file, CI), a bar would print nothing until the end, so :class:`LineProgress` prints one line per task
every ``$CLOAKBENCH_PROGRESS_SECONDS`` (default 30) seconds and when it completes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
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


_QUIET = {"diffusers.utils.logging": "disable_progress_bar", "transformers.utils.logging": "disable_progress_bar",
          "huggingface_hub.utils": "disable_progress_bars"}


class _QuietOnImport(importlib.abc.MetaPathFinder):
    """Calls a library's "disable progress bars" function right after its logging module is first imported, so the
    command line quiets the libraries without importing them (``--help`` stays quick)."""

    def find_spec(self, name, path, target=None):
        if name not in _QUIET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module, run=run, fn=_QUIET[name]):
            run(module)
            getattr(module, fn, lambda: None)()

        spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec


def quiet_libraries() -> None:
    """Turn off diffusers / transformers / huggingface_hub progress bars (they would tear ours): now for those
    already imported, on import for the others (and through ``HF_HUB_DISABLE_PROGRESS_BARS`` in worker processes)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for mod, fn in _QUIET.items():
        if mod in sys.modules:
            getattr(sys.modules[mod], fn, lambda: None)()
    if not any(isinstance(f, _QuietOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietOnImport())
