"""Upload readers whose work grows with the file, not with its square: a long JSON string is
lexed once, an xlsx slice resumed deep in a sheet reads about one slice of its rows, and the
shared strings of an xlsx are checked without being held. Structure is asserted, not time."""

from __future__ import annotations

import io
import json
import re
import tracemalloc

import pytest

from bench.upload_readers import strings_xlsx
from etl_app.uploads.formats import FileRefused, Limits, MiB, Row, preflight, read_rows

pytestmark = pytest.mark.unit

LIMITS = Limits()
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def rows_of(data: bytes, fmt: str, limits: Limits = LIMITS, checkpoint: dict | None = None) -> list[tuple[Row, dict]]:
    return list(read_rows(io.BytesIO(data), fmt, checkpoint=checkpoint, limits=limits, size=len(data)))


# ----------------------------------------------------------------------------- json


def test_json_long_strings_reach_the_parser_whole_and_an_oversized_one_is_dropped(monkeypatch):
    """yajl lexes a token cut by the end of a read again from its start at every read (quadratic
    in its length): the pieces handed to it end between tokens, and a string longer than an item
    may hold is never handed on at all."""
    import ijson

    pieces: list[bytes] = []
    real = ijson.basic_parse

    class Recorded:
        def __init__(self, source):
            self.source = source

        def read(self, size: int = -1) -> bytes:
            data = self.source.read(size)
            pieces.append(data)
            return data

    monkeypatch.setattr(ijson, "basic_parse", lambda source, **kw: real(Recorded(source), **kw))
    long = "x" * (768 * 1024) + '\\"é'  # read in many pieces, under the cap on one value
    limits = Limits(max_field_bytes=MiB)  # 8 MiB an item
    data = json.dumps([{"a": 1, "note": long}, {"a": 2, "note": "y" * (9 * MiB)}, {"a": 3}]).encode()
    rows = rows_of(data, "json", limits)
    assert [(r.number, r.errors) for r, _ in rows] == [
        (1, None),
        (2, {"_row": ["not usable: larger than the limit for one item"]}),
        (3, None),
    ]
    assert rows[0][0].values == {"a": 1, "note": long}
    handed = b"".join(pieces)
    assert len(handed) < len(data) - 8 * MiB  # the 9 MiB string was dropped, never handed on
    assert max(len(p) for p in pieces) < 5 * MiB
    ends, at = [], 0
    for piece in pieces:
        at += len(piece)
        ends.append(at)
    strings = [m.span() for m in _STRING.finditer(handed)]
    assert sum(1 for start, end in strings for cut in ends if start < cut < end) == 0


# ----------------------------------------------------------------------------- xlsx shared strings


def test_xlsx_shared_strings_are_counted_in_the_web_request_without_being_held():
    """A small file of very many short texts unpacked to hundreds of MiB in the web process: the
    preflight now streams the part (whatever its count attributes say) and keeps only the
    header's strings."""
    rows = [["Student ID", "Name"], ["S-1", "Ada"], ["S-2", "Bo"]]
    data = strings_xlsx(rows, extra=300_000)
    tracemalloc.start()
    try:
        header = preflight(io.BytesIO(data), "xlsx", LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header == ["Student ID", "Name"]
    assert peak < 8 * MiB  # openpyxl held every string and every <si> element read: ~60 MiB here

    over = Limits(max_shared_strings=300_000)
    for reader in (
        lambda: preflight(io.BytesIO(data), "xlsx", over),
        lambda: rows_of(data, "xlsx", over),
    ):
        with pytest.raises(FileRefused) as exc:
            reader()
        assert (exc.value.status, exc.value.code) == (413, "too_many_shared_strings")
        assert "ETL_UPLOAD_MAX_SHARED_STRINGS" in exc.value.message
    # the count attributes lie (claim 3 strings): the strings are counted all the same
    lying = strings_xlsx(rows, extra=1000)
    lying = _rezip(lying, "xl/sharedStrings.xml", lambda xml: re.sub(rb'([cC]ount=")\d+"', rb'\g<1>3"', xml))
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(lying), "xlsx", Limits(max_shared_strings=500))
    assert exc.value.code == "too_many_shared_strings"


def test_xlsx_shared_strings_part_under_any_name_is_checked_from_the_zip_directory():
    rows = [["Student ID", "Name"], ["S-1", "Ada"]]
    data = strings_xlsx(rows, extra=2000, strings_path="xl/texts.xml")  # the manifest names it
    assert preflight(io.BytesIO(data), "xlsx", LIMITS) == ["Student ID", "Name"]
    assert [r.values for r, _ in rows_of(data, "xlsx")] == [{"Student ID": "S-1", "Name": "Ada"}]
    small = Limits(max_shared_strings_bytes=10_000)
    for reader in (lambda: preflight(io.BytesIO(data), "xlsx", small), lambda: rows_of(data, "xlsx", small)):
        with pytest.raises(FileRefused) as exc:
            reader()
        assert (exc.value.status, exc.value.code) == (413, "too_many_shared_strings")
        assert "ETL_UPLOAD_MAX_SHARED_STRINGS_BYTES" in exc.value.message


def test_xlsx_upload_over_the_shared_strings_cap_is_refused_whole_by_the_api(make_app, auth):
    client = make_app(upload_max_shared_strings=1000).test_client()
    data = strings_xlsx([["Student ID", "Name"], ["S-1", "Ada"]], extra=5000)
    r = client.post(
        "/api/v1/students/upload", data={"file": (io.BytesIO(data), "students.xlsx")}, headers=auth,
        content_type="multipart/form-data",
    )  # fmt: skip
    assert r.status_code == 413, r.get_json()
    body = r.get_json()
    assert body["error"] == "too_many_shared_strings"
    assert "more than 1000 distinct texts" in body["message"] and "ETL_UPLOAD_MAX_SHARED_STRINGS" in body["message"]


def _rezip(data: bytes, name: str, change) -> bytes:
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            part = src.read(info.filename)
            dst.writestr(info.filename, change(part) if info.filename == name else part)
    return out.getvalue()


# ----------------------------------------------------------------------------- xlsx resume


def test_xlsx_resumed_deep_in_the_sheet_parses_about_the_rows_it_reads(monkeypatch):
    """A slice resumed at row N parsed the N rows before it again (openpyxl reads a sheet from its
    top): now it starts at the place in the sheet's XML its checkpoint names."""
    from openpyxl.worksheet._reader import WorkSheetParser

    rows = [["Student ID", "Name", "Grade"]] + [[f"S-{i}", f"name {i % 7}", i % 12 + 1] for i in range(3000)]
    rows[1500] = []  # an empty row, skipped
    data = strings_xlsx(rows)
    full = rows_of(data, "xlsx")
    assert len(full) == 2999 and full[-1][0].number == 3001
    parsed = []
    real = WorkSheetParser.parse_row

    def counted(self, element):
        parsed.append(1)
        return real(self, element)

    monkeypatch.setattr(WorkSheetParser, "parse_row", counted)
    at = next(k for k, (row, _) in enumerate(full) if row.number == 2900)
    rest = rows_of(data, "xlsx", checkpoint=full[at][1])
    assert [(r.number, r.values) for r, _ in rest] == [(r.number, r.values) for r, _ in full[at + 1 :]]
    assert len(rest) == 101
    assert len(parsed) < 110  # the header, the row resumed after, and the 101 read
