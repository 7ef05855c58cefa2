"""The file formats of uploads: detection, synchronous checks and streaming rows.

An uploaded file is read back through a seekable binary file object. :func:`detect` names its
format from the first bytes (the content decides, the name only breaks ties), :func:`preflight`
refuses what cannot be read safely before the file is stored, and :func:`read_rows` streams its
rows with a small JSON-able checkpoint after each, so that a task can stop anywhere and resume
on a fresh file object over the same bytes: nothing lost, nothing repeated.

Formats (:data:`FORMATS`):
- ``csv`` / ``tsv``: UTF-8 text (a BOM is dropped), lines ending in LF or CRLF, fields quoted
  with ``"`` (a quoted field may hold newlines and doubled quotes). The first record is the
  header. The csv delimiter is sniffed from the first 64 KiB among ``,`` ``;`` tab and ``|``
  (the one found the same number of times, outside quotes, in the header and the next records;
  ``,`` when in doubt); tsv is always tab. A data record that is entirely empty is skipped.
  Row numbers are spreadsheet row numbers: the header is row 1 and each record counts one row
  (a quoted newline does not add a row). Resumed by byte offset (the header is re-read from
  offset 0, then the reader seeks): O(1).
- ``json``: one array of objects, streamed with ijson, handed pieces that end between tokens
  (``json_pieces``: yajl lexes a token cut by a read again at every read); numbers are read
  as float or int.
  Resumed by skipping the first N items (a re-parse of those items: O(N), documented cost).
- ``ndjson``: one JSON object per line (blank lines skipped); the row number is the line number.
  Resumed by byte offset.
- ``xlsx``: the first worksheet, read with openpyxl in read-only mode (defusedxml is installed,
  so openpyxl parses XML with it: ``openpyxl.DEFUSEDXML`` is True), its shared strings read
  here, bounded (``xlsx_strings``), and its rows parsed with expat and openpyxl's cell reader
  (``xlsx_sheet``). Row 1 is the header; trailing empty cells and wholly empty rows are
  ignored; a value in a column with no header is a row error. Resumed at the byte of the sheet's
  XML where the last row read starts: no row before it is parsed again.
- ``parquet``: read in batches with pyarrow; values keep their types (nanosecond timestamps are
  cut to microseconds). Resumed by row count, whole row groups skipped from the metadata.

Hostile input: anything wrong with the whole file raises :class:`FileRefused` (413, 415 or
422); a bad row is a :class:`Row` with ``errors`` and the reading goes on. Nothing else is
raised; memory stays bounded by :class:`Limits` (a csv/ndjson line is never held beyond
``8 × max_field_bytes``), and an xlsx zip bomb is refused from the zip directory before
anything is decompressed. Every row carries its ``size`` (its values added up): a value or a
row over its cap is a row error, and a file past ``max_rows`` rows or
:meth:`Limits.decoded_cap` of values is refused from that row on (413), so that a small file
whose one value every row references cannot unpack to gigabytes.
"""

from etl_app.uploads.formats.common import FORMATS, FileRefused, GiB, KiB, Limits, MiB, Row
from etl_app.uploads.formats.delimited import SNIFF_BYTES, sniff_delimiter
from etl_app.uploads.formats.detection import detect
from etl_app.uploads.formats.dispatch import preflight, read_rows

__all__ = [
    "FORMATS",
    "SNIFF_BYTES",
    "FileRefused",
    "GiB",
    "KiB",
    "Limits",
    "MiB",
    "Row",
    "detect",
    "preflight",
    "read_rows",
    "sniff_delimiter",
]
