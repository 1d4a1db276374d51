"""Read training or production data files (CSV, Parquet, JSON) into a pyarrow table, with progress.

Files are streamed in record batches so a progress bar can follow large files; pyarrow is the
``pandas`` extra's dependency and is imported only here, with an install hint when missing.
Parquet and JSON carry their own types. CSV has none, so type inference could turn a zip code
``01234`` into the number 1234: columns named in ``strings=`` (categorical features, segments)
are read as text, and category labels are canonical downstream (``_frame.canonical_label``),
so a CSV-fitted baseline and Parquet or JSON data agree on every category.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["read_table", "MissingExtraError"]

_HINT = "reading CSV or Parquet needs pyarrow: pip install 'otel-ml[pandas]'"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError(_HINT) from exc
    import pyarrow as pa

    return pa


def read_table(path: str | os.PathLike[str], *, progress: bool = False, strings: Sequence[str] = ()) -> Any:
    """Read ``.csv`` (optionally ``.gz``), ``.parquet`` or JSON into a ``pyarrow.Table``.

    JSON is JSON Lines (``.jsonl``, ``.ndjson``, or ``.json`` with one object per line) or a
    ``.json`` array of row objects. CSV columns named in ``strings`` are read as text. With
    ``progress=True`` a progress bar on stderr follows the rows (Parquet) or bytes (CSV).
    """
    pa = _pyarrow()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    suffixes = [s.lower() for s in p.suffixes]
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TimeRemainingColumn()]
    if ".parquet" in suffixes or ".pq" in suffixes:
        pf = pa.parquet.ParquetFile(p)
        total = pf.metadata.num_rows
        batches = []
        with Progress(
            *columns, TextColumn("{task.completed:,}/{task.total:,} rows"), disable=not progress, transient=True
        ) as bar:
            task = bar.add_task(f"reading {p.name}", total=total)
            for batch in pf.iter_batches(batch_size=65_536):
                batches.append(batch)
                bar.advance(task, batch.num_rows)
        return pa.Table.from_batches(batches, schema=pf.schema_arrow)
    if {".json", ".jsonl", ".ndjson"} & set(suffixes):
        return _read_json(pa, p)
    if ".csv" in suffixes:
        import rich.progress

        # Text columns keep "NA", "null", "nan" ... as categories (they are text in JSON and Parquet);
        # numeric columns still read them as missing. Empty fields are missing in both.
        options = pa.csv.ConvertOptions(strings_can_be_null=False, column_types={name: pa.string() for name in strings})
        with rich.progress.open(p, "rb", description=f"reading {p.name}", transient=True, disable=not progress) as fh:
            if suffixes[-1] == ".gz":
                import gzip

                with gzip.open(fh) as gz:
                    return _empty_text_is_missing(pa, pa.csv.read_csv(gz, convert_options=options))
            return _empty_text_is_missing(pa, pa.csv.read_csv(fh, convert_options=options))
    raise ValueError(f"{p}: unsupported file type (expected .csv, .csv.gz, .parquet, .json or .jsonl)")


def _empty_text_is_missing(pa: Any, table: Any) -> Any:
    """An empty CSV field in a text column is a missing value, not the category "" (__unknown__)."""
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(i)
            empty = pc.equal(column, "")
            table = table.set_column(i, field, pc.if_else(empty, pa.scalar(None, field.type), column))
    return table


def _read_json(pa: Any, path: Path) -> Any:
    """JSON Lines through pyarrow's reader; a top-level array of row objects through ``json``."""
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        rows = json.loads(path.read_bytes())
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: a JSON array must hold one object per row")
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowException, TypeError) as exc:  # e.g. 1 and "1" in one column
            raise ValueError(f"{path}: {exc}") from None
    import pyarrow.json

    return pyarrow.json.read_json(path)
