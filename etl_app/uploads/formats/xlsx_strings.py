"""The shared strings of an xlsx (the texts its cells point to), read in bounded memory.

openpyxl reads the whole shared-strings part into a list of str before the first row, through an
iterparse that keeps every ``<si>`` element of the document: a 9.5 MB file of 3.8 M short
strings cost the web process 700 MiB and 50 s. Here the part is streamed with expat (a DTD
refused, so no entity is ever declared), nothing of it kept, and its strings counted against
``max_shared_strings`` whatever its ``count`` attributes claim; its size comes from the zip directory (zipfile never
inflates a part past the size the directory gives it) against ``max_shared_strings_bytes``. The worker keeps
the texts in one UTF-8 buffer with an array of offsets (:class:`SharedStrings`: about 4 bytes a
string beyond its text); the web request keeps none, only the few the header row names.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import IO, Any

from etl_app.uploads.formats.common import FileRefused, GiB, Limits, MiB

_READ = 64 * 1024


def too_many_strings(limits: Limits) -> FileRefused:
    return FileRefused(
        413,
        "too_many_shared_strings",
        f"The .xlsx file holds more than {limits.max_shared_strings} distinct texts (its shared strings; "
        "ETL_UPLOAD_MAX_SHARED_STRINGS): split it into smaller files.",
    )


def check_strings_size(size: int, limits: Limits) -> None:
    """Refuse a shared-strings part that unpacks to more than ``max_shared_strings_bytes``."""
    if size > limits.max_shared_strings_bytes:
        raise FileRefused(
            413,
            "too_many_shared_strings",
            f"The .xlsx file's shared strings (its distinct texts) unpack to {size / MiB:.1f} MiB, more than "
            f"{limits.max_shared_strings_bytes / MiB:g} MiB (ETL_UPLOAD_MAX_SHARED_STRINGS_BYTES): "
            "split it into smaller files.",
        )


class SharedStrings:
    """The texts of the shared strings, by index, in one buffer (what openpyxl's reader indexes)."""

    def __init__(self, limits: Limits):
        self._text = bytearray()
        self._ends = array("I" if limits.max_shared_strings_bytes < 4 * GiB else "Q")

    def append(self, text: str) -> None:
        self._text += text.encode("utf-8")
        self._ends.append(len(self._text))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self._ends):
            raise IndexError(f"the cell points to shared string {index}, which does not exist")
        start = self._ends[index - 1] if index else 0
        return self._text[start : self._ends[index]].decode("utf-8")


class StringRef:
    """A cell's shared string, not read yet (the web request reads only the header's)."""

    def __init__(self, index: int):
        self.index = index


class StringRefs:
    """Stands for the shared strings while the header row is read: each cell gets a :class:`StringRef`."""

    def __getitem__(self, index: int) -> StringRef:
        if index < 0:
            raise IndexError(f"the cell points to shared string {index}, which does not exist")
        return StringRef(index)


def _no_dtd(*_args: Any) -> None:
    raise ValueError("the shared strings declare a DTD")


def stream_strings(src: IO[bytes], limits: Limits, keep: Callable[[int, str], None] | None) -> int:
    """Read the shared-strings part ``src`` once, in constant memory (beyond what ``keep``
    keeps: it is called with each string's index and text, as openpyxl reads it: the text of
    its runs, phonetic hints left out); returns how many strings it holds.

    Parsed with expat, a DTD refused (so no entity is ever declared, let alone expanded).
    Refuses (413) more than ``max_shared_strings``; an XML error raises as is, for the caller to
    call the file unreadable.
    """
    from xml.parsers import expat

    from openpyxl.xml.constants import SHEET_MAIN_NS

    si_name, r_name, t_name = (f"{SHEET_MAIN_NS}}}{local}" for local in ("si", "r", "t"))
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _no_dtd
    parser.EntityDeclHandler = _no_dtd
    path: list[str] = []
    parts: list[str] = []
    count = 0
    in_text = False

    def start(name: str, _attrs: Any) -> None:
        nonlocal in_text
        path.append(name)
        depth = len(path)
        in_text = (
            keep is not None
            and name == t_name
            and ((depth == 3 and path[1] == si_name) or (depth == 4 and path[1] == si_name and path[2] == r_name))
        )

    def end(name: str) -> None:
        nonlocal count, in_text
        path.pop()
        in_text = False
        if len(path) == 1 and name == si_name:
            count += 1
            if count > limits.max_shared_strings:
                raise too_many_strings(limits)
            if keep is not None:
                keep(count - 1, "".join(parts).replace("x005F_", ""))
                parts.clear()

    def data(text: str) -> None:
        if in_text:
            parts.append(text)

    if keep is None:  # counting only: the lightest handlers
        depth = 0

        def start(name: str, _attrs: Any) -> None:
            nonlocal depth
            depth += 1

        def end(name: str) -> None:
            nonlocal depth, count
            depth -= 1
            if depth == 1 and name == si_name:
                count += 1
                if count > limits.max_shared_strings:
                    raise too_many_strings(limits)

    else:
        parser.CharacterDataHandler = data
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    while True:
        chunk = src.read(_READ)
        parser.Parse(chunk, not chunk)
        if not chunk:
            return count


def load_workbook(f: IO[bytes], limits: Limits, *, refs_only: bool) -> tuple[Any, str | None]:
    """``(read-only workbook, path of its shared-strings part or None)``, as
    ``openpyxl.load_workbook(f, read_only=True, data_only=True)`` but with the shared strings
    read here: all of them (the worker), or none, only counted and checked (``refs_only``: the
    web request; cells then hold :class:`StringRef`, see :func:`resolve`)."""
    from openpyxl.reader.excel import ExcelReader
    from openpyxl.xml.constants import SHARED_STRINGS

    class Reader(ExcelReader):
        strings_path: str | None = None

        def read_strings(self) -> None:
            found = self.package.find(SHARED_STRINGS)
            if found is None:
                self.shared_strings = SharedStrings(limits)
                return
            path = found.PartName[1:]
            check_strings_size(self.archive.getinfo(path).file_size, limits)
            self.strings_path = path
            if refs_only:  # counted once the header is read, by resolve()
                self.shared_strings = StringRefs()
                return
            strings = SharedStrings(limits)
            with self.archive.open(path) as src:
                stream_strings(src, limits, lambda _, text: strings.append(text))
            self.shared_strings = strings

    reader = Reader(f, read_only=True, data_only=True)
    reader.read()
    return reader.wb, reader.strings_path


def resolve(archive: Any, path: str | None, values: tuple[Any, ...], limits: Limits) -> tuple[Any, ...]:
    """``values`` with each :class:`StringRef` replaced by its text, the shared strings read once
    (counted and refused past ``max_shared_strings``; only the strings named are kept)."""
    wanted = {v.index for v in values if isinstance(v, StringRef)}
    found: dict[int, str] = {}
    if path is None:
        return values

    def keep(index: int, text: str) -> None:
        if index in wanted:
            found[index] = text

    with archive.open(path) as src:
        stream_strings(src, limits, keep)
    missing = wanted - found.keys()
    if missing:
        raise IndexError(f"the cell points to shared string {min(missing)}, which does not exist")
    return tuple(found[v.index] if isinstance(v, StringRef) else v for v in values)
