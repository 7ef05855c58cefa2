"""ndjson: one JSON object a line, read line by line and resumed by byte offset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import _RAW_TEXT_CHARS, Limits, Row, _progress, _strip_bom, object_row
from etl_app.uploads.formats.lines import _Lines


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _ndjson_rows(f: BinaryIO, cp: dict, limits: Limits, size: int) -> Iterator[tuple[Row, dict]]:
    offset = int(cp.get("offset", 0))
    number = int(cp.get("row", 0))
    lines = _Lines(f, offset, limits.max_field_bytes)
    while True:
        got = lines.next()
        if got is None:
            return
        line, overlong = got
        number += 1
        if lines.pos == len(line):  # the first line of the file
            line = _strip_bom(line)
        new_cp = {"offset": lines.pos, "row": number, "progress": _progress(lines.pos, size)}
        if overlong:
            raw = line[:_RAW_TEXT_CHARS].decode("utf-8", "replace")
            msg = f"longer than {limits.max_field_bytes} bytes (ETL_UPLOAD_MAX_FIELD_BYTES)"
            yield Row(number, None, {"_line": [msg]}, raw), new_cp
            continue
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = line.decode("utf-8", "replace").rstrip("\r\n")
            byte = line[exc.start]
            msg = f"not valid UTF-8 (byte 0x{byte:02x} at position {exc.start + 1})"
            yield Row(number, None, {"_line": [msg]}, raw), new_cp
            continue
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
            where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            yield Row(number, None, {"_line": [f"not valid JSON: {msg}{where}"]}, text.rstrip("\r\n")), new_cp
            continue
        if not isinstance(value, dict):
            yield Row(number, None, {"_row": ["not a JSON object"]}, value), new_cp
            continue
        yield object_row(number, value, limits), new_cp
