"""Settling an ingestion: its quality (docs/quality.md) measured once, stored, and announced.

An ingestion is *settled* when none of its raw records is ``received`` any more and, for an
upload, its parse is over (``uploads.status`` ``parsed`` or ``failed``). :func:`settle` finds,
among the ingestions it is given, the settled ones whose quality is not stored yet, measures
them with :func:`etl_app.quality.quality_select` (one statement per record type, grouped by
ingestion id) and stores each report with ``finished_at`` (the moment its last record settled, or
its parse ended). The write is conditional (``WHERE quality IS NULL`` and still settled), so two
callers settling the same ingestion at once store one report, and a replay that reopened it
meanwhile wins; and a settler locks the rows it measures (``SKIP LOCKED``), so a second one does
not measure them again.

Callers: the persist and dead-letter tasks after each commit (:meth:`tasks.chunks.ChunkTask.settle_after_commit`;
the check that nothing settled is one indexed query), ``GET /api/v1/ingestions/{id}`` when it
finds one settled but not measured, and the outbox sweeper's catch-up (:func:`catch_up`), which
measures what a worker lost between its commit and its settle.

A replayed dead letter reopens its ingestion (:mod:`etl_app.dead_letters.actions` clears
``quality`` and ``finished_at``): it is measured again when the replayed record settles.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.ingest.progress import FINISHED, UPLOAD_FAILED, read_status, read_statuses
from etl_app.jsonsafe import json_safe
from etl_app.lineage import openlineage
from etl_app.models import FAILED, sql, unsettled_by_ingestion
from etl_app.quality import (
    BY_INGESTIONS,
    METRIC_COLUMNS,
    SET_ASIDE_COLUMNS,
    UNUSABLE,
    as_report,
    in_schema_order,
    quality_select,
)
from etl_app.record_types import Registry, get_registry

log = logging.getLogger(__name__)

CATCH_UP_LIMIT = 500  # ingestions the sweeper's catch-up measures a run, at most
# The upload parse is over (or there is no upload).
_PARSE_DONE = "NOT EXISTS (SELECT 1 FROM uploads u WHERE u.id = i.id AND u.status NOT IN (:PARSED, :FAILED))"
_NOTHING_IN_FLIGHT = (
    f"NOT EXISTS (SELECT 1 FROM raw_records r WHERE r.ingestion_id = i.id AND {unsettled_by_ingestion('r.status')})"
)
_SETTLED = f"i.quality IS NULL AND {_NOTHING_IN_FLIGHT} AND {_PARSE_DONE}"

# A settler locks the ingestions it measures until it has stored their reports: another settler
# (the other worker child settling the same upload's last chunks, the sweeper's catch-up) skips
# them instead of measuring them a second time (a 50,000-row upload is about a second of
# PostgreSQL), and ``GET /api/v1/ingestions/{id}`` waits for the report (:func:`_await_settler`).
# NO KEY UPDATE: only quality and finished_at change; the key share locks of rows inserted
# referencing the ingestion do not conflict with it.
_LOCK = "FOR NO KEY UPDATE OF i SKIP LOCKED"
# The fast path: of these ingestions, the settled and unmeasured ones (usually none).
_BY_INGESTION = sql(f"SELECT i.id, i.record_type FROM ingestions i WHERE i.id = ANY(:ids) AND {_SETTLED} {_LOCK}")
_BY_RECORD = sql(
    "SELECT i.id, i.record_type FROM ingestions i "
    f"WHERE i.id IN (SELECT r.ingestion_id FROM raw_records r WHERE r.id = ANY(:raw_ids)) AND {_SETTLED} {_LOCK}"
)
_CATCH_UP = sql(
    f"SELECT i.id, i.record_type FROM ingestions i WHERE i.record_type = ANY(:types) AND {_SETTLED} LIMIT :n {_LOCK}"
)
# Is a settler measuring this ingestion now (its row locked)? Asked in a savepoint rolled back at
# once, so the share lock, when taken, is not held while the caller measures.
_FREE = sa.text("SELECT 1 FROM ingestions WHERE id = :id FOR SHARE SKIP LOCKED")
_WAIT = sa.text("SELECT 1 FROM ingestions WHERE id = :id FOR SHARE")
# How long a reader waits for a settler's report before measuring the ingestion itself.
SETTLER_WAIT_MS = 10_000

# When a settled ingestion finished: its last record's settling, or its upload's parse end.
_FINISHED_AT = """greatest(
            coalesce((SELECT max(r.updated_at) FROM raw_records r WHERE r.ingestion_id = i.id), i.created_at),
            (SELECT coalesce(u.parsed_at, i.created_at) FROM uploads u WHERE u.id = i.id))"""
_FINISHED = sql(f"SELECT {_FINISHED_AT} FROM ingestions i WHERE i.id = :id")
_STORE = sql(
    f"""
    UPDATE ingestions i SET quality = m.quality,
        finished_at = {_FINISHED_AT}
    FROM jsonb_each(CAST(:reports AS jsonb)) AS m(id, quality)
    WHERE i.id = CAST(m.id AS uuid) AND {_SETTLED}
    RETURNING i.id
    """
)


def empty_report() -> dict[str, Any]:
    """The quality of an ingestion with no record at all (an upload that failed before its first
    row): nothing received, validity 0, level unusable."""
    row: dict[str, Any] = dict.fromkeys(METRIC_COLUMNS)
    row.update(received=0, accepted=0, rejected=0, validity=0.0, level=UNUSABLE, top_errors=[])
    row.update({name: {"total": 0, "fields": {}} for name in SET_ASIDE_COLUMNS})
    return as_report(row)


# For the rest of the caller's transaction: JIT off (as in the daily-quality job, the planner's
# guess about the rejections' jsonb would make it JIT-compile the statement for far longer than it
# runs) and generic plans. The measuring statement is long: planning it took about 3 ms of CPU, as
# long as measuring 300 to 400 records, and PostgreSQL planned it again for each call (a custom
# plan looked cheaper than the generic one on its estimates). Its generic plan reads the same
# indexes; once the driver has prepared the statement (its fifth run on a connection, in
# transactions that commit) it is planned once a connection.
_MEASURE_SETTINGS = sa.text(
    "SELECT set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)"
)


def _measure(conn: sa.Connection, registry: Registry, type_name: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    """The as_report shape of each of these ingestions of one type, in one statement (in the
    caller's transaction, with :data:`_MEASURE_SETTINGS`)."""
    conn.execute(_MEASURE_SETTINGS)
    statement = sql(
        quality_select(
            registry[type_name],
            **BY_INGESTIONS,
        )
    )
    reports = {ident: empty_report() for ident in ids}
    for row in conn.execute(statement, {"t": type_name, "ids": ids}).mappings():
        reports[row["k"]] = as_report(row)
    return reports


def stored_form(report: dict[str, Any]) -> str:
    """A quality report as ``ingestions.quality`` holds it (JSON text)."""
    return _dumps(report)


def _dumps(value: Any) -> str:
    """``orjson.dumps(json_safe(value))``, copying ``value`` through :func:`json_safe` only when
    orjson finds something to clean: it refuses lone surrogates and writes NUL as ``\\u0000``,
    which jsonb refuses. A report's strings come from PostgreSQL, which holds neither, and its
    numbers are finite (the one other thing json_safe changes), so the copy, about 15 µs a report
    (one per single record), is almost never made."""
    try:
        encoded = orjson.dumps(value)
        clean = b"\\u0000" not in encoded
    except orjson.JSONEncodeError:  # a lone surrogate
        clean = False
    return (encoded if clean else orjson.dumps(json_safe(value))).decode()


def _store(conn: sa.Connection, registry: Registry, candidates: Iterable[sa.Row]) -> list[uuid.UUID]:
    """Measure the candidate ingestions and store what is still unmeasured and settled; their ids."""
    by_type: dict[str, list[uuid.UUID]] = {}
    known = set(registry.names())
    for ident, type_name in candidates:
        if type_name in known:
            by_type.setdefault(type_name, []).append(ident)
    if not by_type:
        return []
    reports: dict[uuid.UUID, dict] = {}
    for type_name, ids in by_type.items():
        reports.update(_measure(conn, registry, type_name, ids))
    # one JSON object {id: report}: an array of jsonb is adapted element by element, in Python
    document = _dumps({str(ident): report for ident, report in reports.items()})
    return list(conn.execute(_STORE, {"reports": document}).scalars())


def settle_on(
    conn: sa.Connection,
    registry: Registry,
    ingestion_ids: Sequence[Any] = (),
    *,
    raw_ids: Sequence[int] = (),
    settings: Settings | None = None,
    commit: Callable[[], None] | None = None,
) -> list[uuid.UUID]:
    """Settle those of ``ingestion_ids`` (and of the ingestions of ``raw_ids``) that are settled
    and not measured yet, on ``conn``; commit (``commit``, else ``conn.commit``), then announce
    each (:func:`_on_settled`). Returns the ids whose quality this call stored. When none is
    settled (the usual case) it is one indexed query, and nothing is committed."""
    ids = sorted({i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)) for i in ingestion_ids})
    candidates: list[sa.Row] = []
    if ids:
        candidates += conn.execute(_BY_INGESTION, {"ids": ids}).all()
    if raw_ids:
        candidates += conn.execute(_BY_RECORD, {"raw_ids": sorted(set(raw_ids))}).all()
    if not candidates:
        return []  # the usual case: one query, and the caller's transaction is left as it is
    stored = _store(conn, registry, {tuple(c) for c in candidates})
    (commit or conn.commit)()
    _announce(conn, settings, stored)
    return stored


def settle(
    engine: sa.Engine,
    ingestion_ids: Sequence[Any] = (),
    *,
    raw_ids: Sequence[int] = (),
    registry: Registry | None = None,
    settings: Settings | None = None,
) -> list[uuid.UUID]:
    """:func:`settle_on` on a connection of its own (the registered types unless ``registry`` is
    given). Pass ``settings`` to announce what it settled (:func:`_on_settled`)."""
    with engine.connect() as conn:
        return settle_on(conn, registry or get_registry(), ingestion_ids, raw_ids=raw_ids, settings=settings)


def settle_quietly(conn: sa.Connection, registry: Registry, settings: Settings | None, **which: Any) -> None:
    """:func:`settle_on` for a task that has committed its own work: a failure here is logged (the
    sweeper's catch-up measures the ingestion later), never the task's."""
    try:
        settle_on(conn, registry, which.get("ingestion_ids", ()), raw_ids=which.get("raw_ids", ()), settings=settings)
    except Exception:
        log.exception("could not settle the quality of ingestions; the outbox sweeper will")
        try:
            conn.rollback()
        except Exception:
            log.debug("rollback after a failed settle failed too", exc_info=True)


def catch_up(
    conn: sa.Connection,
    registry: Registry,
    *,
    settings: Settings | None = None,
    commit: Callable[[], None] | None = None,
    limit: int = CATCH_UP_LIMIT,
) -> list[uuid.UUID]:
    """Measure up to ``limit`` settled ingestions that have no quality yet (a worker stopped between
    its commit and its settle, or they settled before quality was stored); for the sweeper."""
    candidates = conn.execute(_CATCH_UP, {"types": registry.names(), "n": limit}).all()
    stored = _store(conn, registry, candidates) if candidates else []
    (commit or conn.commit)()
    _announce(conn, settings, stored)
    return stored


def ingestion_status(
    conn: sa.Connection, ingestion_id: uuid.UUID, registry: Registry | None = None, settings: Settings | None = None
) -> dict[str, Any] | None:
    """What ``GET /api/v1/ingestions/{id}`` shows (:func:`etl_app.ingest.progress.read_status`).
    An ingestion that has settled and whose quality is not stored yet (a batch whose every
    record was refused reaches no worker; a worker stopped before its settle) is shown finished:
    with the report of a settler measuring it now, once stored (:func:`_await_settler`), else
    measured here as it would be stored; it writes nothing: the outbox sweeper's catch-up stores
    it, and announces it. ``completeness`` comes in the schema's field order
    (:func:`etl_app.quality.in_schema_order`)."""
    report, due = read_status(conn, ingestion_id)
    if report is None:
        return None
    registry = registry or get_registry()
    record_type = registry.get(report["record_type"])
    if record_type is None:
        return report
    if due and _await_settler(conn, report["id"]):
        report, due = read_status(conn, ingestion_id)  # stored by the settler, unless it rolled back
        if report is None:
            return None
    if due:
        quality = _measure(conn, registry, record_type.name, [report["id"]])[report["id"]]
        failed = report["upload"] is not None and report["upload"]["status"] == FAILED
        report = {
            **report,
            "status": UPLOAD_FAILED if failed else FINISHED,
            "quality": orjson.loads(stored_form(quality)),  # as the catch-up will store it
            "finished_at": conn.scalar(_FINISHED, {"id": report["id"]}),
        }
    if report["quality"] is not None:
        completeness = in_schema_order(record_type, report["quality"].get("completeness"))
        report["quality"] = {**report["quality"], "completeness": completeness}
    return report


def _await_settler(conn: sa.Connection, ingestion_id: uuid.UUID) -> bool:
    """Wait (up to :data:`SETTLER_WAIT_MS`) for a settler measuring this ingestion now to store
    its report; True if one was (the caller reads the ingestion again), False if none was or it
    took longer (the caller measures it as before). No lock outlives the call."""
    savepoint = conn.begin_nested()
    try:
        free = conn.execute(_FREE, {"id": ingestion_id}).first() is not None
    finally:
        savepoint.rollback()
    if free:
        return False
    savepoint = conn.begin_nested()
    try:
        conn.execute(sa.text(f"SET LOCAL lock_timeout = {SETTLER_WAIT_MS}"))
        conn.execute(_WAIT, {"id": ingestion_id})
        waited = True
    except sa.exc.OperationalError as exc:  # lock_timeout: LockNotAvailable
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
        waited = False
    finally:
        savepoint.rollback()  # the lock and the timeout go with it
    return waited


def _announce(conn: sa.Connection, settings: Settings | None, stored: Sequence[uuid.UUID]) -> None:
    """Tell the lineage server (:func:`_on_settled`) about each ingestion this call stored, as
    ``GET /api/v1/ingestions/{id}`` shows it. Nothing is read when no server is configured: a
    worker settling single records settles an ingestion per record, and reading each back was
    most of its work. When one is, they are read together (two statements however many)."""
    if not stored or settings is None or not openlineage.enabled(settings):
        return
    try:
        reports = read_statuses(conn, list(stored))
    except Exception:
        log.exception("could not announce %d settled ingestions", len(stored))
        reports = {}
    for ident in stored:
        report = reports.get(ident)
        if report is None:
            continue
        try:
            _on_settled(settings, report)
        except Exception:
            log.exception("could not announce the settled ingestion %s", ident)
    conn.rollback()  # end the read transaction the reports began


def _on_settled(settings: Settings, report: dict[str, Any]) -> None:
    """The OpenLineage hook: ``report`` is what ``GET /api/v1/ingestions/{id}`` shows, with its
    quality. ``etl_app.lineage.openlineage.settled`` sends it without blocking."""
    openlineage.settled(settings, report)
