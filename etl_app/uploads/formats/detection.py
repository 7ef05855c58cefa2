"""Which format an upload is in, from its first bytes, then its name or content type (:func:`detect`)."""

from __future__ import annotations

import codecs

from etl_app.uploads.formats.common import FileRefused, _empty_file, _strip_bom
from etl_app.uploads.formats.delimited import _sniff_head

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_GZIP_MAGIC = b"\x1f\x8b"
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_NAME_FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_TYPE_FORMATS = {
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.apache.parquet": "parquet",
}


def _name_format(filename: str | None) -> str | None:
    if not filename:
        return None
    lower = filename.strip().lower()
    for ext, fmt in _NAME_FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _type_format(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return _TYPE_FORMATS.get(content_type.split(";")[0].strip().lower())


def detect(head: bytes, filename: str | None, content_type: str | None) -> tuple[str, str | None]:
    """``(format, note)`` of an upload from its first bytes (64 KiB are plenty).

    The content decides first, the name (then the content type) second: zip magic is xlsx
    (checked by :func:`preflight`), ``PAR1`` parquet; a legacy .xls (OLE2), gzip, UTF-16/32
    (BOM) or a text head holding NUL bytes is refused (415). Other text: first non-space
    ``[`` is json, ``{`` ndjson, else csv (tsv when the name or content type says tsv or the
    sniffed delimiter is a tab). ``note`` says when the name disagrees with the content.
    An empty file (or only whitespace/BOM) is refused (422 ``empty_file``).
    """
    named = _name_format(filename) or _type_format(content_type)
    if head.startswith(_ZIP_MAGIC):
        fmt = "xlsx"
    elif head.startswith(b"PAR1"):
        fmt = "parquet"
    elif head.startswith(_OLE2_MAGIC):
        raise FileRefused(
            415, "legacy_excel", "This is a legacy Excel (.xls) file, which is not accepted: save it as .xlsx."
        )
    elif head.startswith(_GZIP_MAGIC):
        raise FileRefused(415, "compressed_file", "Compressed files are not accepted: upload the file uncompressed.")
    elif head.startswith(_WIDE_BOMS):
        raise FileRefused(415, "not_utf8", "The file is UTF-16 or UTF-32 text: save it as UTF-8.")
    else:
        text = _strip_bom(head)
        stripped = text.lstrip()
        if not stripped:
            raise _empty_file()
        if b"\x00" in text:
            raise FileRefused(
                415,
                "binary_content",
                "The file holds NUL bytes, so it is not UTF-8 text (UTF-16 text is refused too): "
                "save it as UTF-8 CSV, or upload .xlsx, .json, .ndjson or .parquet.",
            )
        first = stripped[:1]
        if first == b"[":
            fmt = "json"
        elif first == b"{":
            fmt = "ndjson"
        elif named == "tsv":
            fmt = "tsv"
        else:
            fmt = "tsv" if _sniff_head(text) == "\t" else "csv"
    note = None
    if named is not None and named != fmt and not (named in ("csv", "tsv") and fmt in ("csv", "tsv")):
        label = f"named .{named}" if _name_format(filename) else f"sent as {content_type}"
        note = f"{label} but the content is {fmt}; read as {fmt}"
    return fmt, note
