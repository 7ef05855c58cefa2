"""The filters of dead-letter lists and bulk actions, parsed once for the API and the CLI."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl_app import errors
from etl_app.dead_letters.errors import FilterRequired, InvalidParameter
from etl_app.models import DEAD_LETTER_STATUSES, OPEN, DeadLetter

DEAD_LETTERS = DeadLetter.__table__

# A moment as the filters take it: ISO 8601 date and time, seconds and offset optional (naive
# is UTC). The OpenAPI document gives this pattern; datetime.fromisoformat alone would take more
# (a date alone, week dates). Years 0001..9999; February has 28 days here.
_DAY = (
    r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-"
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
)
MOMENT_PATTERN = (
    rf"^{_DAY}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{{1,6}})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$"
)
_MOMENT = re.compile(MOMENT_PATTERN)


def parse_moment(raw: str) -> datetime:
    """``raw`` (:data:`MOMENT_PATTERN`) as an aware datetime; ValueError otherwise."""
    if not _MOMENT.fullmatch(raw):
        raise ValueError(raw)
    moment = datetime.fromisoformat(raw)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


FILTERS = ("record_type", "error_type", "ingestion_id", "since", "status")
NARROWING = FILTERS[:4]  # what a bulk action needs one of (or ``all``)
BULK_FLAGS = ("all", "dry_run")
ALL = "all"  # status filter: every status


@dataclass(frozen=True)
class Filters:
    record_type: str | None = None
    error_type: str | None = None
    ingestion_id: uuid.UUID | None = None
    since: datetime | None = None  # on last_failed_at
    status: str = OPEN  # or ALL
    group_key: str | None = None  # one group of dead letters (etl_app.dead_letters.groups)

    def where(self) -> list[sa.ColumnElement[bool]]:
        out = []
        if self.record_type is not None:
            out.append(DEAD_LETTERS.c.record_type == self.record_type)
        if self.error_type is not None:
            out.append(DEAD_LETTERS.c.error_type == self.error_type)
        if self.ingestion_id is not None:
            out.append(DEAD_LETTERS.c.ingestion_id == self.ingestion_id)
        if self.since is not None:
            out.append(DEAD_LETTERS.c.last_failed_at >= self.since)
        if self.status != ALL:
            out.append(DEAD_LETTERS.c.status == self.status)
        if self.group_key is not None:
            out.append(DEAD_LETTERS.c.group_key == self.group_key)
        return out


def parse_filters(params: Mapping[str, Any], record_types: Collection[str], extra: Collection[str] = ()) -> Filters:
    """Filters from query parameters or a JSON object; an unknown name or a bad value raises
    :class:`InvalidParameter` naming it (names in ``extra`` are allowed and left to the caller)."""
    for name in params:
        if name not in FILTERS and name not in extra:
            raise InvalidParameter(name, f"unknown parameter; filters are {', '.join(FILTERS)}")
    for name in FILTERS:
        if params.get(name) == "":
            raise InvalidParameter(name, "is empty: give it a value or leave it out")
    values = {name: params[name] for name in FILTERS if params.get(name) is not None}
    for name, value in values.items():
        if not isinstance(value, str):
            raise InvalidParameter(name, "must be a string")
    record_type = values.get("record_type")
    if record_type is not None and record_type not in record_types:
        raise InvalidParameter("record_type", f"unknown record type {record_type!r}")
    error_type = values.get("error_type")
    if error_type is not None and error_type not in errors.ERROR_TYPES:
        raise InvalidParameter("error_type", f"must be one of {', '.join(errors.ERROR_TYPES)}")
    status = values.get("status", OPEN)
    if status not in (*DEAD_LETTER_STATUSES, ALL):
        raise InvalidParameter("status", f"must be one of {', '.join((*DEAD_LETTER_STATUSES, ALL))}")
    ingestion_id = None
    if "ingestion_id" in values:
        try:
            ingestion_id = uuid.UUID(values["ingestion_id"])
        except ValueError:
            raise InvalidParameter("ingestion_id", "must be a UUID") from None
    since = None
    if "since" in values:
        try:
            since = parse_moment(values["since"])
        except ValueError:
            raise InvalidParameter("since", "must be an ISO 8601 timestamp") from None
    return Filters(record_type, error_type, ingestion_id, since, status)


def parse_int(
    params: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int, *, json_body: bool = False
) -> int | None:
    """An integer parameter within ``lo..hi`` (``default`` when absent): a JSON integer, or ASCII
    digits in a query string (``int()`` alone would take " 5", "+5", "5_000" or "٥"); in a JSON
    body (``json_body``) a JSON integer only, never a string of digits."""
    raw = params.get(name)
    if raw is None:
        return default
    if isinstance(raw, str) and not json_body:
        value = int(raw) if raw.isascii() and raw.isdigit() else None
    else:
        value = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if value is None or not lo <= value <= hi:
        raise InvalidParameter(name, f"must be an integer from {lo} to {hi}")
    return value


def parse_flag(params: Mapping[str, Any], name: str, *, json_body: bool = False) -> bool:
    """A boolean (absent: false): in a JSON body (``json_body``) JSON true or false only, never
    the string "true" (``{"all": "true"}`` must not replay every open dead letter); as a query
    parameter true/false/1/0."""
    if name not in params:
        return False
    raw = params[name]
    if isinstance(raw, bool):
        return raw
    if not json_body and isinstance(raw, str) and raw.lower() in ("true", "1", "false", "0"):
        return raw.lower() in ("true", "1")
    raise InvalidParameter(name, "must be JSON true or false" if json_body else "must be true or false")


def refuse_empty_filters(params: Mapping[str, Any]) -> None:
    """A bulk action given an empty filter value (an unset shell variable, most likely) is
    refused: :class:`FilterRequired` naming it."""
    for name in FILTERS:
        if name in params and params[name] in (None, ""):
            raise FilterRequired(name, f"{name} is empty: give it a value or leave it out")


def require_filter(params: Mapping[str, Any], *, everything: bool) -> None:
    """Refuse a bulk action given an empty filter value, or no filter at all unless
    ``everything`` (the caller said ``all``): :class:`FilterRequired`."""
    refuse_empty_filters(params)
    if not everything and not any(name in params for name in NARROWING):
        raise FilterRequired(
            None, f"a bulk action needs a filter ({', '.join(NARROWING)}), or all: true for every open dead letter"
        )
