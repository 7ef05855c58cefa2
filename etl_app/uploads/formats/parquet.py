"""parquet: the footer's checks, and the rows read in batches with pyarrow and resumed by row count.

Text and binary columns are read as dictionary arrays (a value referenced by every row is held
once), and the size of every value is measured with pyarrow.compute before anything becomes a
Python object: a row holding a value over ``max_field_bytes`` (or adding up to more than
``max_row_bytes``) is a row error whose large values are never converted, and the other rows are
converted a few MiB at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import (
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

_BATCH = 1024
_CONVERT_BYTES = 4 * MiB  # the values turned into Python objects at once
_SCALAR_SIZE = 8
_TEXT_KINDS = ("STRING", "NONE", "JSON", "BSON", "ENUM")


def _unreadable_parquet(detail: str) -> FileRefused:
    return FileRefused(
        422, "unreadable_file", f"The parquet file cannot be read ({detail}): write it again and upload it."
    )


def _parquet_file(f: BinaryIO, *, dictionaries: bool = False) -> Any:
    """The file's reader; with ``dictionaries``, its text and binary columns (nested ones too)
    read as dictionary arrays."""
    import pyarrow.parquet as pq

    f.seek(0)
    try:
        pf = pq.ParquetFile(f)
        if dictionaries:
            schema = pf.schema
            paths = [
                col.path
                for col in (schema.column(i) for i in range(len(schema)))
                if col.physical_type == "BYTE_ARRAY" and col.logical_type.type in _TEXT_KINDS
            ]
            if paths:
                f.seek(0)
                pf = pq.ParquetFile(f, read_dictionary=paths)
        return pf
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise _unreadable_parquet(_detail(exc)) from None


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


def _parquet_batches(pf: Any, groups: range) -> Iterator[Any]:
    """Record batches one row group at a time, so that a batch never spans two groups and a
    corrupt group is found after the rows of the groups before it."""
    for group in groups:
        yield from pf.iter_batches(batch_size=_BATCH, row_groups=[group], use_threads=False)


def _sizes(column: Any) -> tuple[list[int], list[int]]:
    """Each row's ``(total, largest)`` size in a pyarrow array, measured without converting it:
    text in characters, binary in bytes, lists and structs added up, 8 for anything else."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        total, largest = _sizes(column.dictionary)
        indices = column.indices
        return _taken(total, indices), _taken(largest, indices)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        lengths = pc.fill_null(pc.utf8_length(column), 0).to_pylist()
        return lengths, lengths
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        lengths = pc.fill_null(pc.binary_length(column), 0).to_pylist()
        return lengths, lengths
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_map(kind)
    ):
        return _list_sizes(column)
    if pa.types.is_struct(kind):
        total, largest = [0] * len(column), [0] * len(column)
        for child in column.flatten():
            t, b = _sizes(child)
            total = [x + y for x, y in zip(total, t, strict=True)]
            largest = [max(x, y) for x, y in zip(largest, b, strict=True)]
        return total, largest
    sizes = [_SCALAR_SIZE if valid else 0 for valid in column.is_valid().to_pylist()]
    return sizes, sizes


def _taken(sizes: list[int], indices: Any) -> list[int]:
    return [0 if i is None else sizes[i] for i in indices.to_pylist()]


def _list_sizes(column: Any) -> tuple[list[int], list[int]]:
    """A list column's rows: the sizes of their elements added up, and the largest element."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total, largest = [0] * len(column), [0] * len(column)
    values = column.flatten()
    if len(values):
        t, b = _sizes(values)
        parents = pc.list_parent_indices(column)
        grouped = (
            pa.table({"p": parents, "t": pa.array(t, pa.int64()), "b": pa.array(b, pa.int64())})
            .group_by("p")
            .aggregate([("t", "sum"), ("b", "max")])
        )
        for p, t_sum, b_max in zip(*(grouped[k].to_pylist() for k in ("p", "t_sum", "b_max")), strict=True):
            total[p], largest[p] = t_sum, b_max
    return total, largest


def _parquet_rows(f: BinaryIO, cp: dict, limits: Limits) -> Iterator[tuple[Row, dict]]:
    pf = _parquet_file(f, dictionaries=True)
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
    batches = _parquet_batches(pf, range(group, len(counts)))
    while True:
        try:
            batch = next(batches)
            if skip:
                cut = min(skip, batch.num_rows)
                batch, skip, number = batch.slice(cut), skip - cut, number + cut
            names = batch.schema.names
            sizes = [_sizes(batch.column(i)) for i in range(batch.num_columns)]
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt page found mid-file
            raise _unreadable_parquet(f"{_detail(exc)} at row {number + 1}") from None
        for row in _batch_rows(batch, names, sizes, number, limits):
            number = row.number
            yield row, {"rows": number, "progress": _progress(number, total)}


def _batch_rows(batch: Any, names: list[str], sizes: list, number: int, limits: Limits) -> Iterator[Row]:
    """The rows of one record batch (the first is row ``number + 1``): a row over a cap as an
    error, converted one small value at a time; the others converted a few MiB at a time."""
    start, pending = 0, 0
    for r in range(batch.num_rows):
        columns = {name: (sizes[c][0][r], sizes[c][1][r]) for c, name in enumerate(names)}
        size, errors = cap_errors(columns, limits)
        if errors is None:
            pending += size
            if pending >= _CONVERT_BYTES:
                yield from _converted(batch, names, sizes, start, r + 1, number)
                start, pending = r + 1, 0
            continue
        yield from _converted(batch, names, sizes, start, r, number)
        start, pending = r + 1, 0
        keep = raw_keeps(limits)
        small = {
            name: _column_values(batch.column(c).slice(r, 1))[0] if columns[name][0] <= keep else None
            for c, name in enumerate(names)
        }
        yield Row(number + r + 1, None, errors, capped_raw(small, columns, limits), size)
    yield from _converted(batch, names, sizes, start, batch.num_rows, number)


def _converted(batch: Any, names: list[str], sizes: list, start: int, end: int, number: int) -> Iterator[Row]:
    """Rows ``start`` to ``end`` (excluded) of a batch, none of them over a cap, as Python values."""
    if end <= start:
        return
    part = batch.slice(start, end - start)
    columns = [_column_values(part.column(i)) for i in range(part.num_columns)]
    for k in range(end - start):
        r = start + k
        values = {name: columns[c][k] for c, name in enumerate(names)}
        size = sum(sizes[c][0][r] for c in range(len(names)))
        raw = {name: _jsonable(v) if not isinstance(v, _Bad) else str(v) for name, v in values.items()}
        bad = [name for name, v in values.items() if isinstance(v, _Bad)]
        if bad:
            msg = f"column '{bad[0]}' cannot be read ({values[bad[0]].reason})"
            yield Row(number + r + 1, None, {"_row": [msg]}, raw, size)
        else:
            yield Row(number + r + 1, values, None, raw, size)
