"""The project's own exceptions, under one base :class:`CloakbenchError`.

The command line catches :class:`CloakbenchError` once and prints its message on one paragraph with
exit code 2 (bad input, missing model or weights, bad config: the user can fix it). Each class also
keeps the built-in base it had before (``ValueError``, ``OSError``, ``KeyError``, ...), so code that
catches the built-in keeps working. Every message names the file, key or value at fault.
"""

from __future__ import annotations

from pathlib import Path


class CloakbenchError(Exception):
    """Base of every error cloakbench raises on purpose (input, configuration, models, weights)."""


class ImageError(CloakbenchError, ValueError):
    """Bad image input. ``problems`` maps each offending path (or folder) to a reason."""

    def __init__(self, problems: dict[Path, str]) -> None:
        self.problems = dict(problems)
        lines = [f"  {p}: {why}" for p, why in self.problems.items()]
        head = f"{len(self.problems)} bad image input(s):" if len(self.problems) > 1 else "bad image input:"
        super().__init__("\n".join([head, *lines]))

    def __reduce__(self):  # picklable: a bench worker process sends it back to the parent
        return type(self), (self.problems,)


class ModelLoadError(CloakbenchError, OSError):
    """A model could not be loaded; the message names the source and how to make it available."""


class UnknownNameError(CloakbenchError, KeyError):
    """A name that is not registered; the message lists close matches and all names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable sentence
        return str(self.args[0])


class WeightError(CloakbenchError, RuntimeError):
    """Base class of weights-manager errors (missing file, checksum mismatch, refused download)."""


class MiniWeightsError(CloakbenchError, FileNotFoundError):
    """The mini weights are missing; the message says how to train them."""


class ConfigError(CloakbenchError, ValueError):
    """All problems of a config file, each as ``key: message``."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        self.path = path
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))

    def __reduce__(self):
        return type(self), (self.path, self.problems)


class InputError(CloakbenchError, ValueError):
    """A bad argument or input combination (a metric that needs references without them, ...)."""


class CheckpointError(CloakbenchError, ValueError):
    """A training checkpoint that cannot be resumed safely (wrong configuration, or a pickled state)."""


class RunFolderError(CloakbenchError, RuntimeError):
    """A bench run folder that belongs to another grid, or is in use by another process."""
