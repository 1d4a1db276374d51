"""Stream CSV and Parquet data sets (a file, a directory of files, a glob) in record batches.

Offline drift and the baseline fit must run on data-lake tables far larger than memory, so
nothing here materialises a table: :func:`open_dataset` wraps the input as a
``pyarrow.dataset`` (hive partitions in directories are columns too), :func:`check_columns`
checks every file's own schema up front (a data set scanner silently fills a column one file
lacks with nulls, which would read as missing values, not the clear error a single file gives),
and :func:`batches` yields only the needed columns, ``batch_size`` rows at a time, decoded by
pyarrow's thread pool while numpy counts the previous batch. CSV follows :func:`read_table`'s
rules: ``strings`` columns are text, and an empty text field is missing, not a category.
JSON has no streaming reader in pyarrow datasets; :func:`read_table` still reads it whole.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._files import _empty_text_is_missing, _pyarrow

__all__ = ["DEFAULT_BATCH_ROWS", "batches", "check_columns", "is_streamable", "open_dataset"]

DEFAULT_BATCH_ROWS = 131_072
"""Rows per record batch: 50 float64 columns are ~52 MB per batch, and with the two batches of
read-ahead below the working set stays a few hundred MB whatever the row count."""
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".csv.bz2")
_JSON = (".json", ".jsonl", ".ndjson")


def _format_of(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(_PARQUET):
        return "parquet"
    if lower.endswith(_CSV):
        return "csv"
    if lower.endswith(_JSON):
        return "json"
    return None


def _files_of(source: str) -> tuple[list[str], bool]:
    """The data files of ``source`` and whether it is a directory (hive partitioning applies)."""
    if any(ch in source for ch in "*?["):
        files = sorted(f for f in _glob.glob(source, recursive=True) if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"{source}: no file matches")
        return files, False
    p = Path(source)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and _format_of(f.name) is not None)
        if not files:
            raise FileNotFoundError(f"{source}: no .parquet or .csv file in this directory")
        return files, True
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    return [str(p)], False


def is_streamable(source: str | os.PathLike[str]) -> bool:
    """True for Parquet and CSV inputs (files, directories, globs); JSON is read whole."""
    try:
        files, _ = _files_of(str(source))
    except FileNotFoundError:
        return _format_of(str(source)) != "json"  # let open_dataset raise the clear error
    return _format_of(files[0]) != "json"


def open_dataset(
    source: str | os.PathLike[str],
    *,
    strings: Sequence[str] = (),
    floats: Sequence[str] = (),
    dictionary: bool = False,
) -> Any:
    """A ``pyarrow.dataset.Dataset`` over a file, a directory (hive partitions) or a glob of files.

    All files must share one format (Parquet, or CSV optionally compressed). CSV columns named
    in ``strings`` are read as text and columns in ``floats`` as float64, in every file: the data
    set's schema is otherwise its first file's, and a file whose column pyarrow typed differently
    (integers in one, decimals or an all-empty column in another) would fail. Other CSV columns
    keep pyarrow's type inference. With
    ``dictionary``, Parquet text columns among ``strings`` arrive dictionary-encoded as the file
    stores them, so a reader that wants codes per distinct value does not encode every batch again.
    """
    pa = _pyarrow()
    import pyarrow.dataset as ds

    files, is_dir = _files_of(str(source))
    formats = {_format_of(f) for f in files}
    if len(formats) != 1 or None in formats or "json" in formats:
        raise ValueError(f"{source}: expected Parquet or CSV files of one format, found {sorted(map(str, formats))}")
    fmt: Any = "parquet"
    if dictionary and strings and formats == {"parquet"}:
        fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=list(strings)))
    if formats == {"csv"}:
        types = {**{n: pa.float64() for n in floats}, **{n: pa.string() for n in strings}}
        convert = pa.csv.ConvertOptions(strings_can_be_null=False, column_types=types)
        fmt = ds.CsvFileFormat(convert_options=convert)
    try:
        dataset = _dataset(ds, source, files, is_dir, fmt)
        if floats and formats == {"parquet"}:  # one schema for every file: numbers as float64
            schema = dataset.schema
            for name in floats:
                i = schema.get_field_index(name)
                if i >= 0 and (pa.types.is_integer(schema.field(i).type) or pa.types.is_null(schema.field(i).type)):
                    schema = schema.set(i, pa.field(name, pa.float64()))
            if schema != dataset.schema:
                dataset = _dataset(ds, source, files, is_dir, fmt, schema)
        return dataset
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{source}: {exc}") from None


def _dataset(ds: Any, source: Any, files: list[str], is_dir: bool, fmt: Any, schema: Any = None) -> Any:
    """The data set of exactly ``files`` (a directory's other files, a README say, are not data)."""
    if is_dir:
        return ds.dataset(files, format=fmt, partitioning="hive", partition_base_dir=str(source), schema=schema)
    return ds.dataset(files, format=fmt, schema=schema)


def check_columns(dataset: Any, needed: Sequence[str], what: str = "the data") -> None:
    """Raise ``ValueError`` naming the columns that some file of ``dataset`` lacks.

    Every fragment's own schema is checked (Parquet: its footer; CSV: its header), plus the
    partition columns of a hive directory, so a file without a feature fails here instead of
    being scanned as all-null.
    """
    import pyarrow.dataset as ds

    for fragment in dataset.get_fragments():
        have = set(fragment.physical_schema.names) | set(ds.get_partition_keys(fragment.partition_expression))
        missing = [n for n in needed if n not in have]
        if missing:
            where = f"{what} ({Path(fragment.path).name})" if len(dataset.files) > 1 else what
            raise ValueError(f"{where} has no column for baseline feature(s) {', '.join(map(repr, missing))}")


def count_rows(dataset: Any) -> int | None:
    """Rows of a Parquet data set from the footers (cheap); None for CSV (it would mean a full read)."""
    if dataset.format.default_extname == "parquet":
        return int(dataset.count_rows())
    return None


def batches(
    dataset: Any,
    columns: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool = False,
    description: str = "reading",
) -> Iterator[Any]:
    """Record batches of ``columns`` only, with a progress bar over rows (Parquet) or files (CSV).

    Files are scanned one after the other with two batches of read-ahead, so memory does not grow
    with the data set; decoding still runs on pyarrow's threads, overlapping the caller's counting.
    """
    pa = _pyarrow()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = count_rows(dataset) if progress else None
    import pyarrow.dataset as ds

    is_csv = dataset.format.default_extname == "csv"
    # Parquet pre-buffering reads whole row groups of every column ahead: +400 MB RSS and slower here.
    options = None if is_csv else ds.ParquetFragmentScanOptions(pre_buffer=False)
    # One file at a time: a data set scanner reads the next files ahead of a slow consumer without
    # bound (RSS grew from 0.5 to 1.2 GB over ten 1M-row files); a fragment's own scan is bounded.
    scanner = (
        batch
        for fragment in dataset.get_fragments()
        for batch in fragment.to_batches(
            schema=dataset.schema,
            columns=list(columns),
            batch_size=batch_size,
            batch_readahead=2,
            use_threads=True,
            fragment_scan_options=options,
        )
    )
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not progress, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"{description} (rows)", total=total)
        for batch in scanner:
            if is_csv:
                batch = _empty_text_is_missing(pa, pa.Table.from_batches([batch])).combine_chunks().to_batches()
                batch = batch[0] if batch else None
                if batch is None:
                    continue
            bar.advance(task, batch.num_rows)
            yield batch
