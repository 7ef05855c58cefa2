"""The upload readers over mutated files: each either yields rows (each with values or a row
error) or refuses the file with FileRefused, never another exception, never without bound.

Small valid files of every format are mutated by hypothesis (derandomized: the same examples on
every run) with byte flips, insertions, deletions and truncations, and for xlsx inside the zip's
parts (then zipped again), and read through what the API and the parse task call: ``detect``,
``preflight`` and ``read_rows`` (with resume from a checkpoint)."""

from __future__ import annotations

import io
import json
import zipfile

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.upload_readers import strings_xlsx
from etl_app.uploads.formats import FileRefused, Limits, Row, detect, preflight, read_rows

LIMITS = Limits(max_field_bytes=4096, max_shared_strings=1000, max_shared_strings_bytes=64 * 1024)
ROWS = [["Student ID", "Name", "Grade"], ["S-1", "Ada", 3], ["S-2", 'Bo "B", Jr.', 12], ["S-3", "", 7.5]]


def _xlsx() -> bytes:
    wb = openpyxl.Workbook()
    for row in ROWS:
        wb.active.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _parquet() -> bytes:
    table = pa.table({"student_id": ["S-1", "S-2", None], "grade": [3, 12, None], "tags": [["a"], [], None]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    return buf.getvalue()


def _delimited(sep: str) -> bytes:
    return "\n".join(sep.join(f'"{c}"' if '"' in str(c) else str(c) for c in row) for row in ROWS).encode() + b"\n"


SEEDS = {
    "csv": _delimited(","),
    "tsv": _delimited("\t"),
    "json": json.dumps(
        [dict(zip(ROWS[0], row, strict=True)) for row in ROWS[1:]] + [1, {"a": [1, {"b": None}]}]
    ).encode(),
    "ndjson": b"\n".join(json.dumps(dict(zip(ROWS[0], row, strict=True))).encode() for row in ROWS[1:]) + b"\n",
    "xlsx": _xlsx(),
    "xlsx-shared": strings_xlsx(ROWS),
    "parquet": _parquet(),
}


def _mutate(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, at, n, blob in ops:
        at = at % (len(out) + 1)
        if kind == 0 and out:  # flip a byte
            out[at % len(out)] ^= 1 + n % 255
        elif kind == 1:  # insert
            out[at:at] = blob
        elif kind == 2:  # delete a range
            del out[at : at + n]
        elif kind == 3:  # truncate
            del out[at:]
        else:  # repeat a slice (a structure copied)
            out[at:at] = out[at : at + n] * 3
    return bytes(out)


def _mutate_in_zip(data: bytes, part: int, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    infos = src.infolist()
    target = infos[part % len(infos)].filename
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in infos:
            content = src.read(info.filename)
            dst.writestr(info.filename, _mutate(content, ops) if info.filename == target else content)
    return out.getvalue()


def _read_all(data: bytes, fmt: str) -> None:
    """Every way the app reads an upload; only FileRefused may come out."""
    try:
        detected, _ = detect(data[:65536], f"upload.{fmt}", None)
    except FileRefused:
        detected = None
    for each in {fmt, detected} - {None}:
        try:
            preflight(io.BytesIO(data), each, LIMITS)
        except FileRefused:
            pass
        rows: list[tuple[Row, dict]] = []
        try:
            for row, cp in read_rows(io.BytesIO(data), each, checkpoint=None, limits=LIMITS, size=len(data)):
                assert isinstance(row, Row) and isinstance(row.number, int)
                assert (row.values is None) != (row.errors is None) or row.errors
                assert row.values is None or isinstance(row.values, dict)
                json.dumps(cp)
                rows.append((row, cp))
                assert len(rows) <= len(data) + 2, "more rows than bytes"
        except FileRefused:
            continue
        if len(rows) > 1:  # a resume from the middle gives exactly the rest
            k = len(rows) // 2
            rest = list(read_rows(io.BytesIO(data), each, checkpoint=rows[k][1], limits=LIMITS, size=len(data)))
            assert [r.number for r, _ in rest] == [r.number for r, _ in rows[k + 1 :]]


OPS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 64), st.binary(max_size=16)),
    min_size=1,
    max_size=4,
)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("seed", list(SEEDS))
@FUZZ
@given(ops=OPS)
def test_mutated_files_yield_rows_or_are_refused(seed, ops):
    fmt = seed.split("-")[0]
    _read_all(SEEDS[seed], fmt)  # the seed itself reads
    _read_all(_mutate(SEEDS[seed], ops), fmt)


@pytest.mark.parametrize("seed", ["xlsx", "xlsx-shared"])
@FUZZ
@given(part=st.integers(0, 20), ops=OPS)
def test_xlsx_with_mutated_parts_yields_rows_or_is_refused(seed, part, ops):
    _read_all(_mutate_in_zip(SEEDS[seed], part, ops), "xlsx")
