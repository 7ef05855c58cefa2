"""Dead letters grouped by cause: the same record type, error type and normalised message.

:func:`etl_app.dead_letters.causes.normalise` turns an error message into its cause: ids, numbers,
moments and quoted values become placeholders, so that "grade 13 of 'S-17' refused" and "grade 14
of 'S-9' refused" are one cause. It runs when a dead letter is written (:mod:`.store` sets ``dead_letters.cause``); the
column ``group_key`` is generated from the three parts (:data:`etl_app.models.GROUP_KEY_SQL`: 16
hex digits of their md5), and is the group's id in the API and the CLI.

:func:`list_groups` reads one page of groups, most dead letters first, with their first and last
failure, a sample (the newest) and their arrivals per hour over the last day: two queries, both
on the index ``ix_dead_letters_groups`` (status, group_key, last_failed_at). :func:`replay_group`
and :func:`discard_group` act on a group's open dead letters through :mod:`.actions`, or only
count them with ``dry_run``. The caller owns the transaction, audits, and sends the replayed
chains after the commit, as for any bulk replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.dead_letters import actions
from etl_app.dead_letters.errors import GroupNotFound, InvalidParameter
from etl_app.dead_letters.filters import Filters
from etl_app.dead_letters.queries import DEAD_LETTERS
from etl_app.models import DEAD_LETTER_STATUSES, OPEN

MAX_REASON_CHARS = 1000
REASON_PATTERN = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"  # not blank, no NUL (the OpenAPI document's words for check_reason)
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
ARRIVAL_HOURS = 24

GROUP_KEY = re.compile(r"[0-9a-f]{16}")
CURSOR = re.compile(r"(\d{1,19})\.([0-9a-f]{16})")

# -- reading ----------------------------------------------------------------------------------


@dataclass
class GroupPage:
    items: list[dict[str, Any]]
    next: str | None
    limit: int


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The ``next`` of a previous page (``<count>.<group id>``), or :class:`InvalidParameter`."""
    if cursor is None:
        return None
    match = CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidParameter("cursor", "must be the `next` of the previous page")
    return int(match.group(1)), match.group(2)


def _by_group(filters: Filters) -> sa.Select:
    d = DEAD_LETTERS.c
    n = sa.func.count().label("count")
    return (
        sa.select(
            d.group_key,
            sa.func.min(d.record_type).label("record_type"),  # one value a group: they are in its key
            sa.func.min(d.error_type).label("error_type"),
            n,
            sa.func.min(d.first_failed_at).label("first_seen"),
            sa.func.max(d.last_failed_at).label("last_seen"),
            sa.func.max(d.id).label("sample_id"),
        )
        .where(*filters.where())
        .group_by(d.group_key)
    )


def _arrivals(conn: sa.Connection, filters: Filters, keys: list[str], now: datetime) -> tuple[datetime, dict]:
    """Arrivals (``last_failed_at``) per hour of the last :data:`ARRIVAL_HOURS` hours, by group."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=ARRIVAL_HOURS - 1)
    d = DEAD_LETTERS.c
    hour = sa.cast(sa.func.floor(sa.extract("epoch", d.last_failed_at - start) / 3600), sa.Integer).label("hour")
    rows = conn.execute(
        sa.select(d.group_key, hour, sa.func.count())
        .where(*filters.where(), d.group_key.in_(keys), d.last_failed_at >= start)
        .group_by(d.group_key, hour)
    )
    counts: dict[str, list[int]] = {key: [0] * ARRIVAL_HOURS for key in keys}
    for key, index, n in rows:
        if 0 <= index < ARRIVAL_HOURS:
            counts[key][index] += n
    return start, counts


def list_groups(
    conn: sa.Connection,
    filters: Filters,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: tuple[int, str] | None = None,
    now: datetime | None = None,
) -> GroupPage:
    """One page of the groups of the dead letters matching ``filters`` (open ones unless told),
    most dead letters first (ties by id); ``next`` is the cursor of the following page. Each:
    ``id``, ``record_type``, ``error_type``, ``cause``, ``count``, ``first_seen``, ``last_seen``,
    ``sample`` (the newest: ``{id, payload, error}``) and ``arrivals`` (``{unit: hour, from,
    counts}``: the last 24 hours, oldest first, the current hour last)."""
    grouped = _by_group(filters)
    n = sa.func.count()
    if cursor is not None:
        grouped = grouped.having(sa.tuple_(n, DEAD_LETTERS.c.group_key) < sa.tuple_(cursor[0], cursor[1]))
    page = grouped.order_by(n.desc(), DEAD_LETTERS.c.group_key.desc()).limit(limit + 1).subquery("g")
    sample = DEAD_LETTERS.alias("sample")
    rows = (
        conn.execute(
            sa.select(page, sample.c.cause, sample.c.payload, sample.c.error)
            .join_from(page, sample, sample.c.id == page.c.sample_id)
            .order_by(page.c.count.desc(), page.c.group_key.desc())
        )
        .mappings()
        .all()
    )
    shown = rows[:limit]
    start, arrivals = _arrivals(conn, filters, [r["group_key"] for r in shown], now or utcnow())
    items = [
        {
            "id": r["group_key"],
            "record_type": r["record_type"],
            "error_type": r["error_type"],
            "cause": r["cause"],
            "count": r["count"],
            "first_seen": r["first_seen"],
            "last_seen": r["last_seen"],
            "sample": {"id": r["sample_id"], "payload": r["payload"], "error": r["error"]},
            "arrivals": {"unit": "hour", "from": start, "counts": arrivals[r["group_key"]]},
        }
        for r in shown
    ]
    more = len(rows) > limit
    return GroupPage(items, f"{shown[-1]['count']}.{shown[-1]['group_key']}" if more else None, limit)


def summaries(
    conn: sa.Connection, filters: Filters, keys: list[str], *, now: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """The numbers of these groups now, of the dead letters matching ``filters``: ``{id: {count,
    first_seen, last_seen, arrivals}}`` as :func:`list_groups` gives them (a group with none
    matching is left out). For pages that refresh the groups they show; index-backed as the list."""
    keys = [key for key in keys if isinstance(key, str) and GROUP_KEY.fullmatch(key)]
    if not keys:
        return {}
    rows = conn.execute(_by_group(filters).where(DEAD_LETTERS.c.group_key.in_(keys))).mappings().all()
    start, arrivals = _arrivals(conn, filters, [r["group_key"] for r in rows], now or utcnow())
    return {
        r["group_key"]: {
            "id": r["group_key"],
            "count": r["count"],
            "first_seen": r["first_seen"],
            "last_seen": r["last_seen"],
            "arrivals": {"unit": "hour", "from": start, "counts": arrivals[r["group_key"]]},
        }
        for r in rows
    }


def get_group(conn: sa.Connection, key: str) -> dict[str, Any]:
    """The three parts of group ``key`` (``{id, record_type, error_type, cause}``), from any of
    its dead letters whatever their status; :class:`GroupNotFound` when none has that key."""
    if not isinstance(key, str) or GROUP_KEY.fullmatch(key) is None:
        raise GroupNotFound(str(key)[:40])
    d = DEAD_LETTERS.c
    row = conn.execute(
        sa.select(d.record_type, d.error_type, d.cause)
        .where(d.status.in_(DEAD_LETTER_STATUSES), d.group_key == key)  # the index's first column
        .limit(1)
    ).first()
    if row is None:
        raise GroupNotFound(key)
    return {"id": key, "record_type": row.record_type, "error_type": row.error_type, "cause": row.cause}


# -- acting -----------------------------------------------------------------------------------


@dataclass
class GroupAction:
    """What a replay or discard of a group did (or, with ``dry_run``, would do): ``count`` dead
    letters acted on, ``remaining`` open ones of the group left; ``replayed`` to send after the
    commit."""

    group: dict[str, Any]
    count: int
    remaining: int
    dry_run: bool
    replayed: actions.Replayed = field(default_factory=actions.Replayed)

    def audit_target(self, **more: Any) -> dict[str, Any]:
        """The audit entry's target: ``{group, record_type, error_type, cause}`` and ``more``."""
        group = {name: value for name, value in self.group.items() if name != "id"}
        return {"group": self.group["id"], **group, **more}

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "count": self.count, "remaining": self.remaining, "dry_run": self.dry_run}


def group_filters(key: str) -> Filters:
    """The open dead letters of group ``key``."""
    return Filters(status=OPEN, group_key=key)


def replay_group(conn: sa.Connection, key: str, *, dry_run: bool = False, cap: int = actions.REPLAY_CAP) -> GroupAction:
    """Replay up to ``cap`` open dead letters of group ``key`` (:func:`actions.replay_matching`),
    or with ``dry_run`` only count them (:func:`actions.count_replayable`)."""
    group = get_group(conn, key)
    if dry_run:
        would, remaining = actions.count_replayable(conn, group_filters(key), cap=cap)
        return GroupAction(group, would, remaining, True)
    replayed, remaining = actions.replay_matching(conn, group_filters(key), cap=cap)
    return GroupAction(group, replayed.count, remaining, False, replayed)


def check_reason(reason: Any) -> str:
    """A discard's reason: a non-blank string of at most 1,000 characters (:class:`InvalidParameter`)."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidParameter("reason", "is required: say why these dead letters are discarded")
    if len(reason) > MAX_REASON_CHARS or "\x00" in reason:
        raise InvalidParameter("reason", f"must be at most {MAX_REASON_CHARS} characters, without NUL")
    return reason.strip()


def discard_group(conn: sa.Connection, key: str, reason: str | None, *, dry_run: bool = False) -> GroupAction:
    """Discard every open dead letter of group ``key`` (:func:`actions.discard_matching`; their
    records stay dead); ``reason`` is required (it goes to the audit trail), except for a
    ``dry_run``, which only counts them and checks a reason it is given (a blank one is none)."""
    if not dry_run or not (reason is None or (isinstance(reason, str) and not reason.strip())):
        check_reason(reason)
    group = get_group(conn, key)
    if dry_run:
        return GroupAction(group, actions.count_matching(conn, group_filters(key)), 0, True)
    discarded = actions.discard_matching(conn, group_filters(key))
    return GroupAction(group, len(discarded), actions.count_matching(conn, group_filters(key)), False)
