"""The rows of an xlsx worksheet, each with the place in the sheet's XML to resume after it.

openpyxl's read-only worksheet can only start at the top of the sheet's XML, so resuming at row N
parsed N rows again (11 s a slice at row 290,000; half an hour for a full sheet). Here the XML is
parsed with expat, which tells the byte where each ``<row>`` starts; a row's cells are read by
openpyxl's own ``WorkSheetParser.parse_row`` (dates, booleans, shared strings, errors as before).
A resume feeds expat the sheet's head (up to its first row) then the bytes from the last row
read, which is parsed again and dropped: inflating the skipped part is all it costs, not parsing
it. Rows come in sheet order; a row numbered at or before one already read is dropped (as
openpyxl does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree.ElementTree import TreeBuilder
from xml.parsers import expat

_READ = 64 * 1024


def _tag(name: str) -> str:
    return "{" + name if "}" in name else name


def _no_dtd(*_args: Any) -> None:
    raise ValueError("the sheet declares a DTD")


class SheetRows:
    """The rows after row ``after`` of the read-only worksheet ``ws``; ``at`` is the place a
    checkpoint gave (``[head, row start]``), else None: from the top. ``parsed`` counts the
    rows parsed (those dropped too)."""

    def __init__(self, ws: Any, after: int, at: list[int] | None):
        from openpyxl.worksheet._reader import ROW_TAG, WorkSheetParser

        self.row_tag = ROW_TAG

        wb = ws.parent
        self.cells = WorkSheetParser(
            None,
            ws._shared_strings,
            data_only=True,
            epoch=wb.epoch,
            date_formats=wb._date_formats,
            timedelta_formats=wb._timedelta_formats,
        )
        self.src = wb._archive.open(ws._worksheet_path)
        self.after = after
        self.at = at if at and len(at) == 2 and 0 <= at[0] <= at[1] else None
        self.parsed = 0
        self.head = 0  # where the first row starts in the sheet's XML
        self.skipped = 0  # bytes left out between the head and the resumed row

    def close(self) -> None:
        self.src.close()

    def __iter__(self) -> Iterator[tuple[int, tuple[Any, ...], list[int]]]:
        """``(row number, values, place to resume after it)`` of each row."""
        parser = expat.ParserCreate(namespace_separator="}")
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = _no_dtd
        parser.EntityDeclHandler = _no_dtd
        done: list[tuple[int, Any]] = []
        state: dict[str, Any] = {"builder": None, "depth": 0, "start": 0}

        def start(name: str, attrs: dict[str, str]) -> None:
            tag = _tag(name)
            builder = state["builder"]
            if builder is None:
                if tag != self.row_tag:
                    return
                builder = state["builder"] = TreeBuilder()
                state["start"] = parser.CurrentByteIndex
                state["depth"] = 0
            state["depth"] += 1
            builder.start(tag, {_tag(k): v for k, v in attrs.items()})

        def end(name: str) -> None:
            builder = state["builder"]
            if builder is None:
                return
            builder.end(_tag(name))
            state["depth"] -= 1
            if state["depth"] == 0:
                done.append((state["start"], builder.close()))
                state["builder"] = None

        def data(text: str) -> None:
            if state["builder"] is not None:
                state["builder"].data(text)

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = data

        if self.at is not None:
            self.head, resume = self.at
            parser.Parse(self._read_exactly(self.head), False)
            self.skipped = self._skip(resume - self.head)
            self.cells.row_counter = self.after - 1  # a resumed row without its number is the last one read
        last = self.after
        first = self.at is None
        while True:
            chunk = self.src.read(_READ)
            parser.Parse(chunk, not chunk)
            for start_byte, element in done:
                if first:
                    self.head, first = start_byte, False
                self.parsed += 1
                number, cells = self.cells.parse_row(element)
                self.cells.row_dimensions.clear()
                if number <= last:
                    continue
                last = number
                values: list[Any] = [None] * max((c["column"] for c in cells), default=0)
                for cell in cells:
                    values[cell["column"] - 1] = cell["value"]
                place = start_byte + self.skipped if start_byte >= self.head else start_byte
                yield number, tuple(values), [self.head, place]
            done.clear()
            if not chunk:
                return

    def _read_exactly(self, n: int) -> bytes:
        data = self.src.read(n)
        if len(data) != n:
            raise ValueError("the sheet is shorter than its checkpoint")
        return data

    def _skip(self, n: int) -> int:
        left = n
        while left:
            got = len(self.src.read(min(left, 1024 * 1024)))
            if not got:
                raise ValueError("the sheet is shorter than its checkpoint")
            left -= got
        return n
