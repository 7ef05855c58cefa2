"""The caps of the upload readers (:class:`etl_app.uploads.formats.Limits`) from the settings,
the same for the checks before a file is stored and for the parse that reads it."""

from __future__ import annotations

from etl_app.config import Settings
from etl_app.uploads.formats import Limits


def upload_limits(settings: Settings) -> Limits:
    """``ETL_UPLOAD_MAX_FIELD_BYTES``, ``_ROW_BYTES``, ``_DECODED_BYTES``, ``_EXPANSION``, ``_ROWS``,
    ``_SHARED_STRINGS`` and ``_SHARED_STRINGS_BYTES``; the other caps are :class:`Limits`' own.
    An xlsx sheet may hold ``ETL_UPLOAD_MAX_ROWS`` rows below its header."""
    return Limits(
        max_field_bytes=settings.upload_max_field_bytes,
        max_row_bytes=settings.upload_max_row_bytes,
        max_decoded_bytes=settings.upload_decoded_bytes,
        max_expansion=settings.upload_max_expansion,
        max_rows=settings.upload_max_rows,
        max_sheet_rows=settings.upload_max_rows + 1,
        max_shared_strings=settings.upload_max_shared_strings,
        max_shared_strings_bytes=settings.upload_max_shared_strings_bytes,
    )
