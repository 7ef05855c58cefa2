"""Records waiting for their parents: what waits, and giving up on them now.

A child whose parent is not stored yet waits (``raw_records``: ``received`` with ``waiting_on``)
for up to ``ETL_PARENT_WAIT_SECONDS``, then the pipeline dead-letters it as ``missing_parent``
(``etl_app.pipeline.enrich``). An operator who knows the parent will not come ends the wait at
once (:func:`give_up`): of one ingestion, of one record type, or one record. The choices made:

- The same dead letter as the end of the wait (``missing_parent``, naming the parent), written
  by :func:`etl_app.dead_letters.store.dead_letter` in the caller's transaction, with an error
  that says who gave up, when and after how long. It is replayed as any other.
- The operator's word stands: a given-up record is not replayed by itself when its parent lands
  later (the end of the wait's dead letters are), its ``waiting_on`` is cleared. Replay it (or its
  group) once the parent is there.
- Exactly once, against a chain persisting the record at the same moment: the records are picked
  ``FOR UPDATE SKIP LOCKED`` and every write on either side is conditional on ``status =
  'received'``. A record a persist holds is skipped here (it lands); one held here is skipped by
  the persist (``_MARK_PERSISTED`` finds it dead), and by a retry still queued (validate loads
  unsettled records only).
- Bounded: at most :data:`GIVE_UP_CAP` records a call, oldest first; ``remaining`` says how many
  matching ones still wait.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl_app import errors
from etl_app.config import Settings
from etl_app.dead_letters.errors import FilterRequired, InvalidParameter
from etl_app.dead_letters.store import Failure, dead_letter
from etl_app.models import sql
from etl_app.quality import settle
from etl_app.record_types import Registry

GIVE_UP_CAP = 10_000  # records one call gives up on at most
GIVE_UP_TASK = "give_up"  # the dead letters' task_name: no task, an operator
MAX_GROUPS = 500  # (ingestion, record type) rows the list shows at most, most waiting first
SELECTORS = ("ingestion_id", "record_type", "record")


@dataclass(frozen=True)
class Selector:
    """Which waiting records: exactly one of an ingestion, a record type, or one record (its type
    and natural key)."""

    ingestion_id: uuid.UUID | None = None
    record_type: str | None = None
    key: str | None = None  # with record_type: one record

    def where(self) -> tuple[str, dict[str, Any]]:
        if self.ingestion_id is not None:
            return "ingestion_id = :ingestion_id", {"ingestion_id": self.ingestion_id}
        if self.key is not None:
            where = "record_type = :record_type AND natural_key = :key"
            return where, {"record_type": self.record_type, "key": self.key}
        return "record_type = :record_type", {"record_type": self.record_type}

    def describe(self) -> dict[str, Any]:
        """As the audit trail keeps it."""
        if self.ingestion_id is not None:
            return {"ingestion_id": str(self.ingestion_id)}
        if self.key is not None:
            return {"record": {"type": self.record_type, "key": self.key}}
        return {"record_type": self.record_type}


def parse_selector(params: dict[str, Any], type_names: list[str], *, record_text: bool = False) -> Selector:
    """The :class:`Selector` of ``{ingestion_id | record_type | record: {type, key}}`` (with
    ``record_text``, the command line's, ``record`` is ``"<type>:<key>"``): exactly one of them,
    else :class:`FilterRequired`; a bad value is :class:`InvalidParameter`."""
    given = [name for name in SELECTORS if params.get(name) not in (None, "")]
    unknown = sorted(set(params) - set(SELECTORS))
    if unknown:
        raise InvalidParameter(unknown[0], f"unknown; give one of {', '.join(SELECTORS)}")
    nulls = [name for name in SELECTORS if name in params and params[name] is None]
    if nulls:  # JSON's null is not "left out": the document has no nullable selector
        raise InvalidParameter(nulls[0], "is null: give a value or leave it out")
    if len(given) != 1:
        raise FilterRequired(None, f"give exactly one of {', '.join(SELECTORS)}")
    name = given[0]
    value = params[name]
    if name == "ingestion_id":
        return Selector(ingestion_id=parse_ingestion_id(value))
    if name == "record_type":
        return Selector(record_type=_type_name(name, value, type_names))
    if record_text and isinstance(value, str):
        type_name, sep, key = value.partition(":")
        value = {"type": type_name, "key": key} if sep else None
    if not isinstance(value, dict) or set(value) != {"type", "key"} or not isinstance(value["key"], str):
        shape = "TYPE:KEY" if record_text else '{"type": "<record type>", "key": "<natural key>"}'
        raise InvalidParameter(name, f"a record is {shape}")
    if not value["key"] or len(value["key"]) > 1000 or "\x00" in value["key"]:  # PostgreSQL text holds no NUL
        raise InvalidParameter(name, "the key is 1 to 1,000 characters, none of them NUL")
    return Selector(record_type=_type_name(name, value["type"], type_names), key=value["key"])


def parse_ingestion_id(value: Any) -> uuid.UUID:
    """An ingestion id given as text (an empty one too is :class:`InvalidParameter`)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidParameter("ingestion_id", "not an ingestion id (a UUID)") from None


def _type_name(name: str, value: Any, type_names: list[str]) -> str:
    if value not in type_names:
        raise InvalidParameter(name, f"no record type {value!r}; the types are {', '.join(type_names)}")
    return value


# -- what waits -------------------------------------------------------------------------------

_WAITING = """
    SELECT ingestion_id, record_type, count(*) AS waiting, count(DISTINCT waiting_on) AS parents,
           min(waiting_since) AS waiting_since
    FROM raw_records WHERE status = :RECEIVED AND waiting_on IS NOT NULL {where}
    GROUP BY ingestion_id, record_type
    ORDER BY count(*) DESC, min(waiting_since), ingestion_id, record_type LIMIT :n
"""


def list_waiting(conn: sa.Connection, *, ingestion_id: uuid.UUID | None = None) -> dict[str, Any]:
    """``{total, groups: [{ingestion_id, record_type, waiting, parents, waiting_since}], more}``:
    the records waiting for a parent now, by ingestion and record type (most first, at most
    :data:`MAX_GROUPS`; ``more`` says there were more groups), ``parents`` the distinct parents
    they wait for, ``waiting_since`` when the longest waiting one began. Two queries (the groups,
    the total), both on the partial index of waiting records."""
    where, params = ("AND ingestion_id = :ingestion_id", {"ingestion_id": ingestion_id}) if ingestion_id else ("", {})
    rows = conn.execute(sql(_WAITING.format(where=where)), {**params, "n": MAX_GROUPS + 1}).mappings().all()
    groups = [dict(row) for row in rows[:MAX_GROUPS]]
    total = conn.execute(
        sql(f"SELECT count(*) FROM raw_records WHERE status = :RECEIVED AND waiting_on IS NOT NULL {where}"), params
    ).scalar_one()
    return {"total": total, "groups": groups, "more": len(rows) > MAX_GROUPS}


def count_waiting(conn: sa.Connection, selector: Selector) -> int:
    """How many records of ``selector`` wait for a parent now."""
    where, params = selector.where()
    return conn.execute(
        sql(f"SELECT count(*) FROM raw_records WHERE status = :RECEIVED AND waiting_on IS NOT NULL AND {where}"),
        params,
    ).scalar_one()


# -- giving up --------------------------------------------------------------------------------


@dataclass
class GivenUp:
    """What :func:`give_up` did: the raw records dead-lettered, and how many matching ones still wait."""

    raw_ids: list[int] = field(default_factory=list)
    remaining: int = 0

    @property
    def count(self) -> int:
        return len(self.raw_ids)


def given_up_error(parent: str, who: str, at: datetime, since: datetime | None) -> str:
    """The dead letter's error: the parent it waited for, who gave up, when, after how long (the
    key and numbers vary, so the cause groups every give-up by anyone together)."""
    waited = f" after waiting {max(0, int((at - since).total_seconds()))}s" if since else ""
    return f"parent {parent} not found: given up by '{who}' at {at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}{waited}"


def give_up(conn: sa.Connection, selector: Selector, *, who: str, cap: int = GIVE_UP_CAP) -> GivenUp:
    """Dead-letter as ``missing_parent`` now up to ``cap`` records of ``selector`` that wait for a
    parent (oldest first), in the caller's transaction; ``who`` (a key id, ``cli``) is named in the
    error. Records another transaction holds (a persist) are skipped. See the module docstring."""
    where, params = selector.where()
    picked = conn.execute(
        sql(
            "SELECT id, waiting_on, waiting_since, clock_timestamp() AS at FROM raw_records "
            f"WHERE status = :RECEIVED AND waiting_on IS NOT NULL AND {where} "
            "ORDER BY id LIMIT :cap FOR UPDATE SKIP LOCKED"
        ),
        {**params, "cap": cap},
    ).all()
    failures = [
        Failure(
            row.id,
            errors.MISSING_PARENT,
            given_up_error(row.waiting_on, who, row.at, row.waiting_since),
            waiting_on=row.waiting_on,
        )
        for row in picked
    ]
    dead = dead_letter(conn, failures, GIVE_UP_TASK)
    if dead:
        conn.execute(sa.text("UPDATE raw_records SET waiting_on = NULL WHERE id = ANY(:ids)"), {"ids": dead})
    return GivenUp(sorted(dead), count_waiting(conn, selector))


def settle_given_up(conn: sa.Connection, registry: Registry, settings: Settings | None, given: GivenUp) -> None:
    """Once :func:`give_up`'s transaction has committed, on a connection of its own: store the
    quality of the ingestions it settled (their last records were the ones waiting), as the
    dead-letter consumer does."""
    if given.raw_ids:
        settle.settle_quietly(conn, registry, settings, raw_ids=given.raw_ids)
