"""The hostile files of the ``hostile`` phase, written deterministically to a path.

Each one is small (or, for a JSON array, as small as its format allows) but asks the service for
far more work, memory or storage than its size suggests: a value repeated by reference on every
row, millions of short shared strings, millions of run-length-encoded rows, one giant string.
The xlsx files are written by hand with :mod:`zipfile` so that they stay as small as an
attacker's would; every zip entry stays under 1 MiB uncompressed.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from etl_app.local.generate import generate, write_records

_OOXML = "openxmlformats.org"
MAIN_NS = f"http://schemas.{_OOXML}/spreadsheetml/2006/main"
REL_NS = f"http://schemas.{_OOXML}/officeDocument/2006/relationships"
PKG_REL_NS = f"http://schemas.{_OOXML}/package/2006/relationships"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<Types xmlns="http://schemas.{_OOXML}/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    f'<Override PartName="/xl/workbook.xml" ContentType="{XLSX_TYPE}.sheet.main+xml"/>'
    f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{XLSX_TYPE}.worksheet+xml"/>'
    f'<Override PartName="/xl/sharedStrings.xml" ContentType="{XLSX_TYPE}.sharedStrings+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    f'<Relationships xmlns="{PKG_REL_NS}"><Relationship Id="rId1" '
    f'Type="{REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><sheets>'
    '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    f'<Relationships xmlns="{PKG_REL_NS}">'
    f'<Relationship Id="rId1" Type="{REL_NS}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{REL_NS}/sharedStrings" Target="sharedStrings.xml"/>'
    "</Relationships>"
)


def _column(n: int) -> str:
    """1 → A, 27 → AA."""
    name = ""
    while n:
        n, rest = divmod(n - 1, 26)
        name = chr(65 + rest) + name
    return name


def _zip_entry(archive: zipfile.ZipFile, name: str, parts: Iterable[str]) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: the same bytes every run
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as out:
        buffer: list[str] = []
        for part in parts:
            buffer.append(part)
            if len(buffer) >= 10_000:
                out.write("".join(buffer).encode())
                buffer.clear()
        out.write("".join(buffer).encode())


def write_xlsx(path: Path, shared: Iterable[str], shared_count: int, rows: Iterable[str], dimension: str) -> None:
    """An xlsx of one worksheet: ``shared`` are the shared strings (``shared_count`` of them), each
    of ``rows`` the ``<c>`` cells of one row (rows and cells without references, as Excel allows)."""
    with zipfile.ZipFile(path, "w", compresslevel=9) as archive:
        _zip_entry(archive, "[Content_Types].xml", [_CONTENT_TYPES])
        _zip_entry(archive, "_rels/.rels", [_ROOT_RELS])
        _zip_entry(archive, "xl/workbook.xml", [_WORKBOOK])
        _zip_entry(archive, "xl/_rels/workbook.xml.rels", [_WORKBOOK_RELS])
        sheet_head = f'<worksheet xmlns="{MAIN_NS}"><dimension ref="{dimension}"/><sheetData>'
        _zip_entry(
            archive,
            "xl/worksheets/sheet1.xml",
            _chain([sheet_head], (f"<row>{cells}</row>" for cells in rows), ["</sheetData></worksheet>"]),
        )
        sst_head = f'<sst xmlns="{MAIN_NS}" count="{shared_count}" uniqueCount="{shared_count}">'
        _zip_entry(
            archive, "xl/sharedStrings.xml", _chain([sst_head], (f"<si><t>{s}</t></si>" for s in shared), ["</sst>"])
        )


def _chain(*parts: Iterable[str]) -> Iterator[str]:
    for part in parts:
        yield from part


def _shared_cells(*indexes: int) -> str:
    return "".join(f'<c t="s"><v>{i}</v></c>' for i in indexes)


def xlsx_shared_string(path: Path, rows: int = 12_000, value_bytes: int = 1_000_000) -> str:
    """Students whose ``name`` and unknown ``payload`` cells all point at one shared string of
    ``value_bytes`` characters (under the 1 MiB field limit; each zip entry under 1 MiB too)."""
    shared = ["student_id", "name", "payload", "S-shared-1", "A" * value_bytes]
    cells = _shared_cells(3, 4, 4)
    write_xlsx(path, shared, len(shared), [_shared_cells(0, 1, 2), *([cells] * rows)], f"A1:C{rows + 1}")
    return f"{rows:,} rows × 2 cells → one shared string of {value_bytes:,} characters"


def xlsx_many_strings(path: Path, strings: int = 3_800_000, rows: int = 10) -> str:
    """``strings`` short shared strings, of which ``rows`` students use two each."""

    def shared() -> Iterator[str]:
        yield from ("student_id", "name")
        for i in range(strings - 2):
            yield f"{i:07d}"

    cells = (_shared_cells(2 + i, 2 + rows + i) for i in range(rows))
    write_xlsx(path, shared(), strings, [_shared_cells(0, 1), *cells], f"A1:B{rows + 1}")
    return f"{strings:,} shared strings, {rows} rows use {2 * rows}"


def _constant(value: str, rows: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array([0] * rows, type=pa.int8()), pa.array([value]))


def _write_parquet(path: Path, columns: dict[str, pa.Array]) -> None:
    pq.write_table(
        pa.table(columns),
        path,
        compression="zstd",
        write_statistics=False,  # min/max of a 1 MB value would be kept twice, uncompressed
        dictionary_pagesize_limit=64 * 2**20,  # a dictionary over the default 1 MiB falls back to plain
    )


def parquet_shared_value(path: Path, rows: int = 100_000, value_bytes: int = 1_000_000) -> str:
    """Students with an unknown ``payload`` column: one dictionary entry of ``value_bytes``
    characters, referenced by every row."""
    _write_parquet(
        path,
        {
            "student_id": _constant("S-dict-1", rows),
            "name": _constant("Ada", rows),
            "payload": _constant("A" * value_bytes, rows),
        },
    )
    return f"{rows:,} rows → one dictionary value of {value_bytes:,} characters"


def parquet_many_rows(path: Path, rows: int = 5_000_000) -> str:
    """``rows`` valid students, all the same constant (dictionary, run-length encoded) values."""
    _write_parquet(
        path,
        {
            "student_id": _constant("S-rle-1", rows),
            "name": _constant("Ada Lovelace", rows),
            "grade_level": pa.array([9] * rows, type=pa.int8()).dictionary_encode(),
        },
    )
    return f"{rows:,} rows of constant columns"


def json_huge_string(path: Path, value_bytes: int = 150 * 10**6) -> str:
    """A JSON array of one student whose unknown ``payload`` is one string of ``value_bytes`` characters."""
    with path.open("wb") as out:
        out.write(b'[{"student_id": "S-json-1", "name": "Ada", "payload": "')
        block = b"A" * 2**20
        left = value_bytes
        while left:
            out.write(block[: min(left, len(block))])
            left -= min(left, len(block))
        out.write(b'"}]\n')
    return f"one string of {value_bytes:,} characters"


def xlsx_students(path: Path, rows: int = 300_000, seed: int = 1) -> str:
    """``rows`` valid generated students (``etl-app generate``) as xlsx."""
    with path.open("wb") as out:
        write_records(generate("students", rows, seed, id_prefix="hx-"), out, "xlsx", "students")
    return f"{rows:,} valid students"


def _repeated_students(rows: int, value_bytes: int) -> Iterator[dict[str, str]]:
    value = "A" * value_bytes
    for i in range(rows):
        yield {"student_id": f"S-rep-{i + 1}", "name": "Ada", "payload": value}


def csv_repeated_value(path: Path, rows: int = 64, value_bytes: int = 1_000_000) -> str:
    """Students with an unknown ``payload`` column of ``value_bytes`` characters on every row."""
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, ["student_id", "name", "payload"])
        writer.writeheader()
        writer.writerows(_repeated_students(rows, value_bytes))
    return f"{rows:,} rows × a {value_bytes:,}-character value"


def ndjson_repeated_value(path: Path, rows: int = 64, value_bytes: int = 1_000_000) -> str:
    """:func:`csv_repeated_value` as NDJSON."""
    with path.open("wb") as out:
        for record in _repeated_students(rows, value_bytes):
            out.write(orjson.dumps(record) + b"\n")
    return f"{rows:,} lines × a {value_bytes:,}-character value"
