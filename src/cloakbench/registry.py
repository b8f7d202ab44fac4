"""One small registry used by every kind of component (protections, purifiers, metrics, ...).

A registry maps a lower-case name to a factory (usually a class) and free-form metadata::

    PROTECTIONS = Registry("protection")

    @PROTECTIONS.register("aspl", paper="arXiv 2303.15433")
    class ASPL(Protection): ...

    PROTECTIONS.create("aspl", eps=8 / 255)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """A registered factory and its metadata."""

    name: str
    factory: Callable[..., T]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> factory mapping with metadata, for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` (case-insensitive) with ``meta``."""
        key = name.lower()

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._entries and self._entries[key].factory is not factory:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = Entry(key, factory, dict(meta))
            return factory

        return deco

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name``; an :class:`UnknownNameError` naming close matches otherwise."""
        key = name.lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        return self._entries[key]

    def create(self, name: str, **overrides: Any) -> T:
        """Build the component ``name`` with keyword ``overrides`` of its defaults."""
        return self.get(name).factory(**overrides)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def non_finite(values: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys of ``values`` (nested mappings and lists walked) holding NaN or an infinity: such an option
    would silently corrupt its output (``alpha=NaN`` made all-black "protected" images, #37)."""
    import math

    out = []
    for key, v in values.items():
        name = f"{prefix}{key}"
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"{name}={v}")
        elif isinstance(v, dict):
            out += non_finite(v, f"{name}.")
        elif isinstance(v, (list, tuple)):
            out += non_finite({str(i): x for i, x in enumerate(v)}, f"{name}.")
    return out
