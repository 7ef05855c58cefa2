"""parquet: the footer's checks, and the rows read in batches with pyarrow and resumed by row count.

One dictionary value may be referenced by every row: before a row group is read, its dictionary
pages are read alone (the first row, text columns as dictionaries) and the widest value of each
sets how many rows a batch holds, so that a batch decodes to at most ``_BATCH_BYTES`` of
dictionary values. The size of every value is then measured with pyarrow.compute before anything
becomes a Python object: a row holding a value over ``max_field_bytes`` (or adding up to more
than ``max_row_bytes``) is a row error whose large values are never converted, and the other rows
are converted a few MiB at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import (
    CellsRow,
    FileRefused,
    Limits,
    MiB,
    Row,
    _detail,
    _jsonable,
    _progress,
    cap_errors,
    capped_raw,
    raw_keeps,
)

_BATCH = 1024  # rows at most
_BATCH_BYTES = 32 * MiB  # what the dictionary values of one batch may decode to
_CONVERT_BYTES = 4 * MiB  # the values turned into Python objects at once
_SCALAR_SIZE = 8
_TEXT_KINDS = ("STRING", "NONE", "JSON", "BSON", "ENUM")


def _unreadable_parquet(detail: str) -> FileRefused:
    return FileRefused(
        422, "unreadable_file", f"The parquet file cannot be read ({detail}): write it again and upload it."
    )


def _parquet_file(f: BinaryIO) -> Any:
    import pyarrow.parquet as pq

    f.seek(0)
    try:
        return pq.ParquetFile(f)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise _unreadable_parquet(_detail(exc)) from None


def _dictionary_probe(f: BinaryIO, pf: Any) -> Any:
    """A second reader of the file whose text and binary columns (nested ones too) come as
    dictionary arrays, reading a page at a time; None without such columns."""
    import pyarrow.parquet as pq

    schema = pf.schema
    paths = [
        col.path
        for col in (schema.column(i) for i in range(len(schema)))
        if col.physical_type == "BYTE_ARRAY" and col.logical_type.type in _TEXT_KINDS
    ]
    if not paths:
        return None
    f.seek(0)
    return pq.ParquetFile(f, read_dictionary=paths, buffer_size=64 * 1024)


def _widest(column: Any) -> int:
    """The widest value of the dictionaries in a pyarrow array (its rows themselves not counted)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        dictionary = column.dictionary
        if pa.types.is_dictionary(dictionary.type) or not len(dictionary):
            return 0
        return int(pc.max(pc.binary_length(dictionary)).as_py() or 0)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _widest(column.values)
    if pa.types.is_map(kind):
        return _widest(column.keys) + _widest(column.items)
    if pa.types.is_struct(kind):
        return sum(_widest(column.field(i)) for i in range(kind.num_fields))
    return 0


def _batch_size(probe: Any, group: int) -> int:
    """Rows a batch of ``group`` may hold: fewer than ``_BATCH`` when a row may reference
    dictionary values wider than ``_BATCH_BYTES / _BATCH`` in all (a list may reference many)."""
    if probe is None:
        return _BATCH
    first = next(probe.iter_batches(batch_size=1, row_groups=[group], use_threads=False), None)
    if first is None:
        return _BATCH
    per_row = sum(_widest(first.column(i)) for i in range(first.num_columns))
    return max(1, min(_BATCH, _BATCH_BYTES // max(per_row, 1)))


def _parquet_preflight(f: BinaryIO, limits: Limits) -> list[str]:
    pf = _parquet_file(f)
    try:
        md = pf.metadata
        names = list(pf.schema_arrow.names)
        if md.num_rows > limits.max_rows:
            raise FileRefused(
                413,
                "too_many_rows",
                f"The file has {md.num_rows} rows, more than {limits.max_rows} (ETL_UPLOAD_MAX_ROWS): split it.",
            )
        for i in range(md.num_row_groups):
            size = md.row_group(i).total_byte_size
            if size > limits.max_row_group_bytes:
                raise FileRefused(
                    413,
                    "row_group_too_large",
                    f"Row group {i + 1} unpacks to {size // MiB} MiB, more than "
                    f"{limits.max_row_group_bytes // MiB} MiB: write the file with smaller row groups.",
                )
    except FileRefused:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _unreadable_parquet(_detail(exc)) from None
    return names


def _column_values(column: Any) -> list[Any]:
    """A pyarrow column as Python values; a value that cannot be converted is a :class:`_Bad`."""
    import pyarrow as pa

    if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
        try:
            column = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False)
        except Exception:  # noqa: BLE001 - fall back to value by value
            pass
    try:
        return column.to_pylist()
    except Exception:  # noqa: BLE001
        out: list[Any] = []
        for scalar in column:
            try:
                out.append(scalar.as_py())
            except Exception as exc:  # noqa: BLE001
                out.append(_Bad(_detail(exc)))
        return out


class _Bad:
    def __init__(self, reason: str):
        self.reason = reason

    def __str__(self) -> str:
        return f"<unreadable: {self.reason}>"


def _parquet_batches(pf: Any, probe: Any, groups: range) -> Iterator[Any]:
    """Record batches one row group at a time, so that a batch never spans two groups and a
    corrupt group is found after the rows of the groups before it."""
    for group in groups:
        size = _batch_size(probe, group)
        yield from pf.iter_batches(batch_size=size, row_groups=[group], use_threads=False)


def _sizes(column: Any) -> tuple[Any, Any]:
    """Each row's ``(total, largest)`` size in a pyarrow array (two int64 arrays), measured
    without converting it: text in characters, binary in bytes, lists and structs added up, 8
    for anything else, 0 for null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):  # the values this batch uses, each once (the dictionary may be large)
        used = pc.unique(column.indices.drop_null())
        total, largest = _sizes(pc.take(column.dictionary, used))
        at = pc.index_in(column.indices, value_set=used)
        return pc.fill_null(pc.take(total, at), 0), pc.fill_null(pc.take(largest, at), 0)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        lengths = pc.fill_null(pc.utf8_length(column).cast(pa.int64()), 0)
        return lengths, lengths
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        lengths = pc.fill_null(pc.binary_length(column).cast(pa.int64()), 0)
        return lengths, lengths
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_map(kind)
    ):
        return _list_sizes(column)
    if pa.types.is_struct(kind):
        total = largest = pa.array([0] * len(column), pa.int64())
        for child in column.flatten():
            t, b = _sizes(child)
            total, largest = pc.add(total, t), pc.max_element_wise(largest, b)
        return total, largest
    sizes = pc.multiply(column.is_valid().cast(pa.int64()), _SCALAR_SIZE)
    return sizes, sizes


def _list_sizes(column: Any) -> tuple[Any, Any]:
    """A list column's rows: the sizes of their elements added up, and the largest element."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column.flatten()
    if not len(values):
        zeros = pa.array([0] * len(column), pa.int64())
        return zeros, zeros
    t, b = _sizes(values)
    grouped = (
        pa.table({"p": pc.list_parent_indices(column), "t": t, "b": b})
        .group_by("p")
        .aggregate([("t", "sum"), ("b", "max")])
    )
    at = pc.index_in(pa.array(range(len(column)), grouped["p"].type), value_set=grouped["p"])
    return pc.fill_null(pc.take(grouped["t_sum"], at), 0), pc.fill_null(pc.take(grouped["b_max"], at), 0)


def _parquet_rows(f: BinaryIO, cp: dict, limits: Limits) -> Iterator[tuple[Row, dict]]:
    pf = _parquet_file(f)
    try:
        md = pf.metadata
        total = md.num_rows
        counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    except Exception as exc:  # noqa: BLE001
        raise _unreadable_parquet(_detail(exc)) from None
    done = int(cp.get("rows", 0))
    group, before = 0, 0
    while group < len(counts) and before + counts[group] <= done:
        before += counts[group]
        group += 1
    if group >= len(counts):
        return
    skip = done - before
    number = before
    try:
        probe = _dictionary_probe(f, pf)
    except Exception as exc:  # noqa: BLE001
        raise _unreadable_parquet(_detail(exc)) from None
    batches = _parquet_batches(pf, probe, range(group, len(counts)))
    while True:
        try:
            batch = next(batches)
            if skip:
                cut = min(skip, batch.num_rows)
                batch, skip, number = batch.slice(cut), skip - cut, number + cut
            names = batch.schema.names
            sizes = [_sizes(batch.column(i)) for i in range(batch.num_columns)]
            totals, largest = _row_sizes(sizes, batch.num_rows)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt page found mid-file
            raise _unreadable_parquet(f"{_detail(exc)} at row {number + 1}") from None
        for row in _batch_rows(batch, names, (sizes, totals, largest), number, limits):
            number = row.number
            yield row, {"rows": number, "progress": _progress(number, total)}


def _row_sizes(sizes: list, n: int) -> tuple[list[int], list[int]]:
    """Each row's size (its values added up) and its largest value, from the columns' sizes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    totals = largest = pa.array([0] * n, pa.int64())
    for t, b in sizes:
        totals, largest = pc.add(totals, t), pc.max_element_wise(largest, b)
    return totals.to_pylist(), largest.to_pylist()


def _batch_rows(batch: Any, names: list[str], measured: tuple, number: int, limits: Limits) -> Iterator[Row]:
    """The rows of one record batch (the first is row ``number + 1``): a row over a cap as an
    error, converted one small value at a time; the others converted a few MiB at a time."""
    sizes, totals, largest = measured
    per_column: list | None = None
    start, pending = 0, 0
    for r in range(batch.num_rows):
        if largest[r] <= limits.max_field_bytes and totals[r] <= limits.max_row_bytes:
            pending += totals[r]
            if pending >= _CONVERT_BYTES:
                yield from _converted(batch, names, totals, start, r + 1, number)
                start, pending = r + 1, 0
            continue
        yield from _converted(batch, names, totals, start, r, number)
        start, pending = r + 1, 0
        if per_column is None:
            per_column = [(t.to_pylist(), b.to_pylist()) for t, b in sizes]
        columns = {name: (per_column[c][0][r], per_column[c][1][r]) for c, name in enumerate(names)}
        size, errors = cap_errors(columns, limits)
        keep = raw_keeps(limits)
        small = {
            name: _column_values(batch.column(c).slice(r, 1))[0] if columns[name][0] <= keep else None
            for c, name in enumerate(names)
        }
        yield Row(number + r + 1, None, errors, capped_raw(small, columns, limits), size)
    yield from _converted(batch, names, totals, start, batch.num_rows, number)


def _converted(batch: Any, names: list[str], totals: list[int], start: int, end: int, number: int) -> Iterator[Row]:
    """Rows ``start`` to ``end`` (excluded) of a batch, none of them over a cap, as Python values."""
    if end <= start:
        return
    part = batch.slice(start, end - start)
    columns = [_column_values(part.column(i)) for i in range(part.num_columns)]
    unreadable = [c for c, column in enumerate(columns) if any(isinstance(v, _Bad) for v in column)]
    rows = zip(*columns, strict=True) if columns else [()] * (end - start)
    for k, cells in enumerate(rows):
        r = start + k
        values = dict(zip(names, cells, strict=True))
        bad = [names[c] for c in unreadable if isinstance(cells[c], _Bad)]
        if bad:
            raw = {name: _jsonable(v) if not isinstance(v, _Bad) else str(v) for name, v in values.items()}
            msg = f"column '{bad[0]}' cannot be read ({values[bad[0]].reason})"
            yield Row(number + r + 1, None, {"_row": [msg]}, raw, totals[r])
        else:
            yield CellsRow(number + r + 1, values, None, None, totals[r])
