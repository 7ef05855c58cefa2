"""Rejected records are kept, not dropped: every record the API or the upload parser refused is
stored in ``rejections`` with its place, its values as received and its field errors.

What is stored of them is bounded (docs/uploads.md, "Rejections are kept"):

- the values as received (``raw``) up to ``ETL_REJECTION_RAW_BYTES`` of JSON (UTF-8): past that, each long
  text in them (keys included) is cut and ends with ``…``, so that the value stays an object with
  its keys; if that is not enough (thousands of keys or items), only the leading entries that fit
  are kept. Such a row has ``raw_truncated`` set and ``raw_size``, the length of the values' JSON
  as received. Error messages are cut the same way, natural keys at :data:`KEY_CHARS`.
- ``ETL_MAX_REJECTIONS_STORED`` rejections of one ingestion are stored; the ones after are only
  counted, in ``ingestions.rejections_not_stored``. Chunks of one upload read by several workers at
  once take turns on the ingestion's row (``SELECT … FOR UPDATE``) to share the allowance.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import orjson
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.jsonsafe import json_safe
from etl_app.record_types import RecordType

MARK = "…"  # ends a cut text

KEY_CHARS = 500  # a natural key longer than this is cut (the key index takes ~2,700 bytes)

MESSAGE_CHARS = 1000  # an error message longer than this is cut

MIN_CHARS = 16  # texts are cut no shorter than this before leading entries are dropped

MAX_DEPTH = 50  # as json_safe: deeper nesting is cut


@dataclass(frozen=True)
class RejectionLimits:
    """How much is stored of rejections: ``raw_bytes`` of one's values (and of its errors), and
    ``max_stored`` of one ingestion's in full."""

    raw_bytes: int = Settings.rejection_raw_bytes
    max_stored: int = Settings.max_rejections_stored

    @classmethod
    def of(cls, settings: Settings) -> RejectionLimits:
        return cls(raw_bytes=settings.rejection_raw_bytes, max_stored=settings.max_rejections_stored)


DEFAULT_LIMITS = RejectionLimits()


class Refused(TypedDict, total=False):
    """One refused record: ``index`` (its place: the index in an API batch, the row of a file),
    ``errors`` (``{field: [message]}``), when known ``raw`` (the values as received) and ``payload``
    (the values as the schema saw them, when they differ from ``raw``: a file's row, its columns
    matched to fields), from which the natural key is read."""

    index: int
    errors: dict[str, list[str]]
    raw: Any
    payload: Any


@dataclass(frozen=True)
class Bounded:
    """A value as stored: its JSON text, whether it was cut, and the length of its JSON as it came."""

    json: str
    truncated: bool
    size: int


def _cut(value: Any, chars: int, cuts: list[int], depth: int = 0) -> Any:
    """``value`` with every text (keys included) longer than ``chars`` cut and ended with ``…``;
    ``cuts`` gets one entry a cut."""
    if depth > MAX_DEPTH:
        cuts.append(depth)
        return MARK
    if isinstance(value, str):
        if len(value) <= chars:
            return value
        cuts.append(len(value))
        return value[:chars] + MARK
    if isinstance(value, dict):
        return {_cut(str(k), chars, cuts): _cut(v, chars, cuts, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cut(v, chars, cuts, depth + 1) for v in value]
    return value


def _length(value: Any, depth: int = 0) -> int:
    """About the length of ``value``'s JSON (characters), without writing it (a text of 200 MB referenced by
    every row of a file is measured, not copied, for each row)."""
    if depth > MAX_DEPTH:
        return 3
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return 1 + sum(len(str(k)) + 4 + _length(v, depth + 1) for k, v in value.items()) + max(len(value), 1)
    if isinstance(value, (list, tuple)):
        return 1 + sum(_length(v, depth + 1) + 1 for v in value) + (not value)
    return len(str(value))


def _dumps(value: Any) -> str:
    return orjson.dumps(json_safe(value), option=orjson.OPT_NON_STR_KEYS).decode()


def _bytes(value: Any) -> int:
    return len(_dumps(value).encode())


def _leading(value: Any, limit: int) -> Any:
    """The leading entries of an object or array whose JSON fits ``limit`` bytes; a text cut to fit."""
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        used = 2
        for k, v in value.items():
            used += _bytes({k: v})
            if used > limit:
                break
            kept[k] = v
        return kept
    if isinstance(value, list):
        items: list[Any] = []
        used = 2
        for v in value:
            used += _bytes(v) + 1
            if used > limit:
                break
            items.append(v)
        return items
    return _dumps(value)[: limit // 6] + MARK  # 6: the most bytes one character takes in JSON


def bound(value: Any, limit: int, chars: int | None = None) -> Bounded:
    """``value`` as JSON of at most about ``limit`` bytes: first every text cut to ``chars``
    characters (default a little under ``limit``), then shorter, then only the leading entries."""
    chars = max(limit - 256, MIN_CHARS) if chars is None else chars  # room for the other fields
    cuts: list[int] = []
    cut = _cut(value, chars, cuts)
    text = _dumps(cut)
    if not cuts and len(text.encode()) <= limit:
        return Bounded(text, False, len(text.encode()))
    size = _length(value)
    while len(text.encode()) > limit and chars > MIN_CHARS:
        chars = max(chars // 2, MIN_CHARS)
        cut = _cut(value, chars, [])
        text = _dumps(cut)
    if len(text.encode()) > limit:
        text = _dumps(_leading(cut, limit))
    return Bounded(text, True, size)


def bound_key(key: str | None) -> str | None:
    return key if key is None or len(key) <= KEY_CHARS else key[:KEY_CHARS] + MARK


_INSERT = sa.text(
    "INSERT INTO rejections (ingestion_id, record_type, position, natural_key, raw, raw_truncated, raw_size, "
    "errors, created_at) "
    "SELECT :id, :t, x.position, x.key, x.raw, x.truncated, x.size, x.errors, :at "
    "FROM unnest(CAST(:positions AS bigint[]), CAST(:keys AS text[]), CAST(:raws AS jsonb[]), "
    "CAST(:truncated AS boolean[]), CAST(:sizes AS bigint[]), CAST(:errors AS jsonb[])) "
    "WITH ORDINALITY AS x(position, key, raw, truncated, size, errors, n) ORDER BY x.n"
)


# The ingestion's row is locked until the caller's transaction ends: chunks of one upload stored
# at once by several workers count in turn, so no more than the allowance is ever stored.
_STORED = sa.text("SELECT rejections_stored FROM ingestions WHERE id = :id FOR UPDATE")


_COUNT = sa.text(
    "UPDATE ingestions SET rejections_stored = rejections_stored + :stored, "
    "rejections_not_stored = rejections_not_stored + :not_stored WHERE id = :id"
)


def store_rejections(
    conn: sa.Connection,
    ingestion_id: uuid.UUID,
    record_type: RecordType,
    refused: Sequence[Refused],
    at: datetime,
    limits: RejectionLimits = DEFAULT_LIMITS,
) -> int:
    """Insert the refused records of one ingestion (its row written already) in the caller's
    transaction, as far as the ingestion's allowance goes, and count the others; returns how
    many were stored."""
    if not refused:
        return 0
    before = conn.execute(_STORED, {"id": ingestion_id}).scalar_one()
    kept = list(refused[: max(0, min(len(refused), limits.max_stored - before))])
    conn.execute(_COUNT, {"stored": len(kept), "not_stored": len(refused) - len(kept), "id": ingestion_id})
    if not kept:
        return 0
    raws = [None if "raw" not in r else bound(r["raw"], limits.raw_bytes) for r in kept]
    conn.execute(
        _INSERT,
        {
            "id": ingestion_id,
            "t": record_type.name,
            "at": at,
            "positions": [r["index"] for r in kept],
            "keys": [bound_key(record_type.natural_key(r.get("payload", r.get("raw")))) for r in kept],
            "raws": [None if b is None else b.json for b in raws],
            "truncated": [b is not None and b.truncated for b in raws],
            "sizes": [None if b is None else b.size for b in raws],
            "errors": [bound(r["errors"], limits.raw_bytes, MESSAGE_CHARS).json for r in kept],
        },
    )
    return len(kept)


def public(refused: Sequence[Refused]) -> list[dict[str, Any]]:
    """What an ingest answer shows of each: its index and errors (the values are the client's own)."""
    return [{"index": r["index"], "errors": r["errors"]} for r in refused]
