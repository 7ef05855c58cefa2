"""Rejected records are kept, not dropped: every record the API or the upload parser refused is
stored in ``rejections`` with its place, its values as received and its field errors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict

import orjson
import sqlalchemy as sa

from etl_app.jsonsafe import json_safe
from etl_app.record_types import RecordType


class Refused(TypedDict, total=False):
    """One refused record: ``index`` (its place: the index in an API batch, the row of a file),
    ``errors`` (``{field: [message]}``), when known ``raw`` (the values as received) and ``payload``
    (the values as the schema saw them, when they differ from ``raw``: a file's row, its columns
    matched to fields), from which the natural key is read."""

    index: int
    errors: dict[str, list[str]]
    raw: Any
    payload: Any


_INSERT = sa.text(
    "INSERT INTO rejections (ingestion_id, record_type, position, natural_key, raw, errors, created_at) "
    "SELECT :id, :t, x.position, x.key, x.raw, x.errors, :at "
    "FROM unnest(CAST(:positions AS bigint[]), CAST(:keys AS text[]), CAST(:raws AS jsonb[]), "
    "CAST(:errors AS jsonb[])) WITH ORDINALITY AS x(position, key, raw, errors, n) ORDER BY x.n"
)


def _json(value: Any) -> str:
    return orjson.dumps(json_safe(value), option=orjson.OPT_NON_STR_KEYS).decode()


def store_rejections(
    conn: sa.Connection,
    ingestion_id: uuid.UUID,
    record_type: RecordType,
    refused: Sequence[Refused],
    at: datetime,
) -> int:
    """Insert the refused records of one ingestion in the caller's transaction; returns how many."""
    if not refused:
        return 0
    conn.execute(
        _INSERT,
        {
            "id": ingestion_id,
            "t": record_type.name,
            "at": at,
            "positions": [r["index"] for r in refused],
            "keys": [record_type.natural_key(r.get("payload", r.get("raw"))) for r in refused],
            "raws": [None if "raw" not in r else _json(r["raw"]) for r in refused],
            "errors": [_json(r["errors"]) for r in refused],
        },
    )
    return len(refused)


def public(refused: Sequence[Refused]) -> list[dict[str, Any]]:
    """What an ingest answer shows of each: its index and errors (the values are the client's own)."""
    return [{"index": r["index"], "errors": r["errors"]} for r in refused]
