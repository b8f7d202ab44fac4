"""Results store: an embedded SQLite database in the run folder.

One row per cell x metric x seed, keyed by the evaluate stage's spec hash and the metric, with the
cell coordinates and provenance (package versions, git sha, device, seconds). Writes are single
transactions in WAL mode with ``INSERT OR REPLACE`` on the unique key, so reruns and concurrent
writers neither duplicate nor lose rows. Exports: CSV (always) and Parquet (with ``pyarrow``,
extra ``cloakbench[parquet]``).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  spec_hash TEXT NOT NULL, metric TEXT NOT NULL, value REAL, n INTEGER, n_no_face INTEGER,
  identity TEXT, protection TEXT, purification TEXT, recipe TEXT, qes INTEGER, seed INTEGER,
  details TEXT, provenance TEXT,
  UNIQUE (spec_hash, metric)
);
"""
COLUMNS = ["spec_hash", "metric", "value", "n", "n_no_face", "identity", "protection", "purification", "recipe",
           "qes", "seed", "details", "provenance"]


def connect(path: Path) -> sqlite3.Connection:
    """The results database at ``path`` (created with its table when new); a file that is not one is an
    :class:`~cloakbench.errors.InputError` naming it (the stage folders hold every result: rebuild it)."""
    con = sqlite3.connect(path, timeout=60)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        con.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        from ..errors import InputError

        raise InputError(f"{path} is corrupt ({exc}): move it aside and rerun the grid with the same --out; the "
                         "finished stages are kept and their rows are written again") from None
    return con


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Insert or replace ``rows`` in one transaction."""
    con = connect(path)
    try:
        with con:
            con.executemany(
                f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [[json.dumps(r[c], default=str) if c in ("details", "provenance") else r.get(c) for c in COLUMNS]
                 for r in rows])
    finally:
        con.close()


def stored_hashes(path: Path) -> set[str]:
    """The evaluate stages (spec hashes) that have rows in the database."""
    con = connect(path)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT spec_hash FROM results")}
    finally:
        con.close()


def read_rows(path: Path) -> list[dict[str, Any]]:
    con = connect(path)
    try:
        cur = con.execute(f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY identity, protection, purification, recipe, qes, seed, metric")
        return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]
    finally:
        con.close()


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first) gets a
    leading ``'`` (OWASP's CSV-injection rule); numbers are written as they are."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(path: Path, out: Path) -> Path:
    """The results table as CSV, text cells neutralised for spreadsheets (:func:`_cell`)."""
    rows = read_rows(path)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    return out


def export_parquet(path: Path, out: Path) -> Path:
    """Write the results table as Parquet (``details`` / ``provenance`` stay JSON strings); atomic."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet export needs pyarrow: pip install 'cloakbench[parquet]'") from exc
    rows = read_rows(path)
    types = {"value": pa.float64(), "n": pa.int64(), "n_no_face": pa.int64(), "qes": pa.int64(), "seed": pa.int64()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out
