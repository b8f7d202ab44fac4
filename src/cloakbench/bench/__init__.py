"""Benchmark runner: a YAML grid as a cached, resumable DAG of stages with an SQLite results store."""

from .config import BenchConfig, ConfigError, load_config
from .runner import Runner, plan
from .spec import Spec

__all__ = ["BenchConfig", "ConfigError", "Runner", "Spec", "load_config", "plan"]
