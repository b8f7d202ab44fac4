"""One small registry used by every kind of component (protections, purifiers, metrics, ...).

A registry maps a lower-case name to a factory (usually a class) and free-form metadata::

    PROTECTIONS = Registry("protection")

    @PROTECTIONS.register("aspl", paper="arXiv 2303.15433")
    class ASPL(Protection): ...

    PROTECTIONS.create("aspl", eps=8 / 255)

Registries are open to code outside the package (#36): a name ``module:Class`` (an importable module) or
``path/to/file.py:Class`` loads that class, which must subclass the registry's ``base`` (a protection must be a
``Protection``: a name never calls an arbitrary function); installed packages add entries through the
``importlib.metadata`` entry-point group ``cloakbench.<kind>s`` (``cloakbench.protections``,
``cloakbench.purifiers``, ``cloakbench.metrics``), read the first time a name is not found or the names are
listed. Importing a plugin runs its module's code: name only code you trust, as with any Python import.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Entry(Generic[T]):
    """A registered factory and its metadata."""

    name: str
    factory: Callable[..., T]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> factory mapping with metadata, for one kind of component."""

    def __init__(self, kind: str, *, base: type | None = None, group: str | None = None) -> None:
        self.kind = kind
        self.base = base  # plugins must subclass it (set after the base class is defined)
        self.group = group  # the entry-point group of installed plugins
        self._entries: dict[str, Entry[T]] = {}
        self._broken: dict[str, str] = {}  # installed plugins that failed to load: name -> why
        self._plugins_read = False

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` (case-insensitive) with ``meta``."""
        key = name.lower()

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._entries and self._entries[key].factory is not factory:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = Entry(key, factory, dict(meta))
            return factory

        return deco

    def _plugin(self, name: str, obj: Any, origin: str) -> Entry[T]:
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise UnknownNameError(f"{self.kind} {name!r}: {origin} is not a {self.base.__name__} subclass")
        key = name.lower()
        if key not in self._entries:
            self._entries[key] = Entry(key, obj, {"paper": getattr(obj, "paper", ""), "plugin": origin})
        return self._entries[key]

    def _read_plugins(self) -> None:
        """Register the installed packages' entry points of :attr:`group` (once; a broken one is named)."""
        if self._plugins_read or self.group is None:
            return
        self._plugins_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            if ep.name.lower() in self._entries:
                log.warning("%s plugin %r (%s) is ignored: the name is taken by %s", self.kind, ep.name, ep.value,
                            self._entries[ep.name.lower()].meta.get("plugin") or "a built-in")
                continue
            try:
                self._plugin(ep.name, ep.load(), f"entry point {ep.value}")
            except Exception as exc:  # noqa: BLE001 - a plugin that cannot load is named when asked for, not fatal
                self._broken[ep.name.lower()] = (f"{self.kind} plugin {ep.name!r} ({ep.value}, entry point group "
                                                 f"{self.group}) cannot be loaded: {type(exc).__name__}: {exc}")

    def _load(self, name: str) -> Entry[T] | None:
        """``module:Class`` or ``file.py:Class`` -> its entry (None for a plain name)."""
        import importlib
        import importlib.util
        from pathlib import Path

        where, sep, attr = name.rpartition(":")
        if not sep or not where or not attr.isidentifier():
            return None
        try:
            if where.endswith(".py"):
                path = Path(where).expanduser().resolve()
                if not path.is_file():
                    raise FileNotFoundError(f"{path} does not exist")
                spec = importlib.util.spec_from_file_location(f"cloakbench_plugin_{path.stem}_{abs(hash(path))}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(where)
            obj = getattr(module, attr)
        except (ImportError, FileNotFoundError, AttributeError, SyntaxError) as exc:
            raise UnknownNameError(f"{self.kind} {name!r}: cannot load {attr} from {where} "
                                   f"({type(exc).__name__}: {exc})") from exc
        return self._plugin(name, obj, name)

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name`` (a registered name, an installed plugin, or ``module:Class``); an
        :class:`UnknownNameError` naming close matches otherwise."""
        key = name.lower()
        if key not in self._entries:
            self._read_plugins()
        if key in self._broken:
            raise UnknownNameError(self._broken[key])
        if key not in self._entries and (loaded := self._load(name)) is not None:
            return loaded
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
        """Sorted registered names (installed plugins included)."""
        self._read_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name (installed plugins included)."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

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
