"""The upload readers on large hostile or deep files, in-process (no services):
``python -m bench.upload_readers [strings|json|xlsx-resume]``.

- strings: an xlsx whose shared strings are N short distinct texts (N from 0.5 M to 3.8 M):
  what the web request's check (preflight) and the worker's read of them cost, in seconds and
  peak resident memory (each in a forked child), beside openpyxl's own ``load_workbook``.
- json: a JSON array holding one string of 50 / 150 MB: seconds to read it.
- xlsx-resume: a generated 300,000-row sheet: seconds for one slice (20,000 rows) read from
  the start and resumed at row 290,000 (``--rows`` to change it).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import time
import zipfile
from collections.abc import Callable
from itertools import islice
from typing import Any

from etl_app.uploads.formats import Limits, preflight, read_rows


def _status(field: str) -> int:
    """A field of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _measure(what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child: its seconds and how far its resident memory rose (Linux)."""

    def child(out: Any) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from now
        before = _status("VmRSS")
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a refusal is a result here
            result = exc
        took = time.perf_counter() - start
        out.send((took, _status("VmHWM") - before, str(result)[:110]))

    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child, args=(send,))
    proc.start()
    took, peak, result = recv.recv()
    proc.join()
    print(f"  {what}: {took:.2f} s, peak RSS +{peak / 1024:.0f} MiB -> {result}", flush=True)
    return result


_SST_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"


def strings_xlsx(rows: list[list[Any]], extra: int = 0, strings_path: str = "xl/sharedStrings.xml") -> bytes:
    """An xlsx whose first sheet holds ``rows``, every text cell a shared string, and whose
    shared-strings part holds ``extra`` more short distinct strings no cell uses (openpyxl
    itself writes inline strings)."""
    import openpyxl
    from openpyxl.xml.constants import SHEET_MAIN_NS as _NS

    buf = io.BytesIO()
    openpyxl.Workbook().save(buf)
    template = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    texts: dict[str, int] = {}
    sheet = io.BytesIO()
    sheet.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{_NS}"><sheetData>'.encode())
    for r, row in enumerate(rows, start=1):
        sheet.write(b'<row r="%d">' % r)
        for value in row:
            if isinstance(value, str):
                index = texts.setdefault(value, len(texts))
                sheet.write(b'<c t="s"><v>%d</v></c>' % index)
            else:
                sheet.write(b"<c><v>%s</v></c>" % str(value).encode())
        sheet.write(b"</row>")
    sheet.write(b"</sheetData></worksheet>")
    total = len(texts) + extra
    sst = io.BytesIO()
    sst.write(
        f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{_NS}" count="{total}" uniqueCount="{total}">'.encode()
    )
    for text in texts:
        sst.write(b"<si><t>" + text.replace("&", "&amp;").replace("<", "&lt;").encode() + b"</t></si>")
    for i in range(extra):
        sst.write(b"<si><t>%x</t></si>" % i)
    sst.write(b"</sst>")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in template.infolist():
            data = template.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = sheet.getvalue()
            elif info.filename == "[Content_Types].xml":
                override = f'<Override PartName="/{strings_path}" ContentType="{_SST_TYPE}" /></Types>'
                data = data.replace(b"</Types>", override.encode())
            dst.writestr(info.filename, data)
        dst.writestr(strings_path, sst.getvalue())
    return out.getvalue()


def bench_strings() -> None:
    import openpyxl

    unbounded = Limits(max_shared_strings=10**9, max_shared_strings_bytes=2**40)
    for n in (1_000_000, 3_800_000):
        data = strings_xlsx([["name"], ["s1"]], extra=n - 2)
        xml = zipfile.ZipFile(io.BytesIO(data)).getinfo("xl/sharedStrings.xml").file_size
        print(f"{n:,} shared strings: file {len(data) / 2**20:.1f} MiB, part {xml / 2**20:.1f} MiB unpacked")
        _measure(
            "openpyxl.load_workbook",
            lambda data=data: len(
                openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]._shared_strings
            ),
        )
        _measure("preflight (web), no caps", lambda data=data: preflight(io.BytesIO(data), "xlsx", unbounded))
        _measure("preflight (web), default caps", lambda data=data: preflight(io.BytesIO(data), "xlsx", Limits()))
        _measure(
            "first row (worker), no caps",
            lambda data=data: next(
                read_rows(io.BytesIO(data), "xlsx", checkpoint=None, limits=unbounded, size=len(data))
            )[0],
        )


def bench_json() -> None:
    for mb in (50, 150):
        data = b'[{"a": 1, "note": "' + b"x" * (mb * 10**6) + b'"}, {"a": 2}]'
        _measure(
            f"JSON array with one {mb} MB string",
            lambda data=data: [
                r.errors
                for r, _ in read_rows(io.BytesIO(data), "json", checkpoint=None, limits=Limits(), size=len(data))
            ],
        )


def bench_xlsx_resume(rows: int) -> None:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet()
    ws.append(["session_id", "tutor_id", "minutes", "rating", "note"])
    for i in range(rows):
        ws.append([f"S-{i}", f"T-{i % 300}", i % 90, (i % 50) / 10, "text"])
    buf = io.BytesIO()
    wb.save(buf)
    data = buf.getvalue()
    print(f"xlsx of {rows:,} rows, {len(data) / 2**20:.1f} MiB")
    first = list(islice(read_rows(io.BytesIO(data), "xlsx", checkpoint=None, limits=Limits(), size=len(data)), 20_000))
    cp = first[-1][1]
    deep = None
    for row, cp_deep in read_rows(io.BytesIO(data), "xlsx", checkpoint=None, limits=Limits(), size=len(data)):
        if row.number == rows - 10_000:
            deep = cp_deep
            break
    for label, at in (("start", None), ("row 20,000", cp), (f"row {rows - 10_000:,}", deep)):
        _measure(
            f"one slice of 20,000 rows resumed at {label}",
            lambda at=at: len(
                list(
                    islice(read_rows(io.BytesIO(data), "xlsx", checkpoint=at, limits=Limits(), size=len(data)), 20_000)
                )
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["strings", "json", "xlsx-resume"])
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    if "strings" in args.what:
        bench_strings()
    if "json" in args.what:
        bench_json()
    if "xlsx-resume" in args.what:
        bench_xlsx_resume(args.rows)


if __name__ == "__main__":
    main()
