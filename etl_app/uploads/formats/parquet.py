"""parquet: the footer's checks, and the rows read in batches with pyarrow and resumed by row count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import FileRefused, Limits, MiB, Row, _detail, _jsonable, _progress

_BATCH = 1024


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


def _parquet_preflight(f: BinaryIO, limits: Limits) -> list[str]:
    pf = _parquet_file(f)
    try:
        md = pf.metadata
        names = list(pf.schema_arrow.names)
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


def _parquet_rows(f: BinaryIO, cp: dict) -> Iterator[tuple[Row, dict]]:
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
    batches = _parquet_batches(pf, range(group, len(counts)))
    while True:
        try:
            batch = next(batches)
            names = batch.schema.names
            columns = [_column_values(batch.column(i)) for i in range(batch.num_columns)]
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt page found mid-file
            raise _unreadable_parquet(f"{_detail(exc)} at row {number + 1}") from None
        for r in range(batch.num_rows):
            number += 1
            if skip:
                skip -= 1
                continue
            values = {name: columns[c][r] for c, name in enumerate(names)}
            raw = {name: _jsonable(v) if not isinstance(v, _Bad) else str(v) for name, v in values.items()}
            bad = [name for name, v in values.items() if isinstance(v, _Bad)]
            new_cp = {"rows": number, "progress": _progress(number, total)}
            if bad:
                msg = f"column '{bad[0]}' cannot be read ({values[bad[0]].reason})"
                yield Row(number, None, {"_row": [msg]}, raw), new_cp
            else:
                yield Row(number, values, None, raw), new_cp
