"""Helpers of the fault tests: what the API answered, the exactly-once check in SQL, the
report, logs and broker contents."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import sqlalchemy as sa

from etl_app.names import PIPELINE_TASKS

from tests.helpers.procs import wait_until
from tests.helpers.support import Api

# One line per scenario, printed at the end of the session (see conftest.pytest_terminal_summary).
RESULTS: list[dict[str, Any]] = []
# The broker of the test now running ("redis", "rabbitmq"; set by tests/faults/conftest.py's
# broker fixture), shown beside each scenario.
CURRENT_BROKER: dict[str, str] = {"name": "redis"}


# -- what the API answered --------------------------------------------------------------------


class Answers:
    """What the API told the clients of one test: the body of every 202 it answered, and how
    many answers of each status. Several client threads may share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()

    def record(self, response: requests.Response) -> None:
        with self._lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 202:
                self.bodies.append(response.json())

    @property
    def ingestion_ids(self) -> list[str]:
        return [b["ingestion_id"] for b in self.bodies]

    @property
    def accepted(self) -> int:
        """Records the clients were told were accepted."""
        return sum(b["accepted"] for b in self.bodies)


class RecordingApi(Api):
    """An :class:`~tests.helpers.support.Api` that records every answer to a POST in ``answers``."""

    def __init__(self, base: str, answers: Answers, timeout: float = 30) -> None:
        super().__init__(base, timeout)
        self.answers = answers

    def post(self, path: str, payload: Any, timeout: float | None = None) -> requests.Response:
        response = super().post(path, payload, timeout)
        self.answers.record(response)
        return response


# -- the exactly-once check -----------------------------------------------------------------


@dataclass
class Outcome:
    """What became of the records of some ingestions."""

    accepted: int = 0
    persisted: int = 0
    dead: int = 0
    received: int = 0
    dead_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.received == 0 and self.accepted == self.persisted + self.dead


def _ids(ingestion_ids: Iterable[Any]) -> list[uuid.UUID]:
    return [uuid.UUID(str(i)) for i in ingestion_ids]


def outcome(engine: sa.Engine, ingestion_ids: Iterable[Any]) -> Outcome:
    ids = _ids(ingestion_ids)
    with engine.connect() as conn:
        accepted = conn.execute(
            sa.text("SELECT coalesce(sum(accepted), 0) FROM ingestions WHERE id = ANY(:ids)"), {"ids": ids}
        ).scalar_one()
        counts = dict(
            conn.execute(
                sa.text("SELECT status, count(*) FROM raw_records WHERE ingestion_id = ANY(:ids) GROUP BY status"),
                {"ids": ids},
            ).all()
        )
        by_type = dict(
            conn.execute(
                sa.text(
                    "SELECT d.error_type, count(*) FROM dead_letters d JOIN raw_records r ON r.id = d.raw_record_id "
                    "WHERE r.ingestion_id = ANY(:ids) AND r.status = 'dead' GROUP BY d.error_type"
                ),
                {"ids": ids},
            ).all()
        )
    return Outcome(
        accepted=int(accepted),
        persisted=counts.get("persisted", 0),
        dead=counts.get("dead", 0),
        received=counts.get("received", 0),
        dead_by_type=by_type,
    )


def wait_settled(engine: sa.Engine, ingestion_ids: Sequence[Any], timeout: float, what: str = "") -> Outcome:
    """Poll until no record of these ingestions is in flight; returns the outcome."""

    def check() -> Outcome | None:
        try:
            o = outcome(engine, ingestion_ids)
        except sa.exc.OperationalError:  # the database is being restarted by the test
            return None
        return o if o.settled else None

    return wait_until(check, timeout, 0.5, what=f"records to settle {what}".strip())


def assert_exactly_once(
    engine: sa.Engine,
    registry: Any,
    ingestion_ids: Sequence[Any] | None = None,
    compare: Sequence[str] = (),
    *,
    answers: Answers | None = None,
) -> Outcome:
    """Every accepted record of these ingestions is persisted exactly once (its row is in its
    table, written from the latest received record of that key, with that record's data: lineage,
    ``raw_record_id`` and the ``compare`` fields) or dead-lettered with its error; none is stuck
    in ``received``.

    With ``answers`` (what the API told the test's clients: ``FaultStack.answers``) the whole
    database is checked, which is the test's own: it holds exactly the ingestions answered 202,
    each with the records its 202 counted (so a request answered otherwise stored nothing),
    every raw record is settled, every table row comes from a persisted record and every dead
    letter from a dead one. The outcome is then that of ``ingestion_ids`` if given (they must
    have been answered 202), else of every answered ingestion."""
    if answers is not None:
        answered = answers.ingestion_ids
        if ingestion_ids is None:
            ingestion_ids = answered
        strays = set(map(str, ingestion_ids)) - set(answered)
        assert not strays, f"ingestions never answered 202: {strays}"
    assert ingestion_ids is not None, "ingestion ids or answers"
    ids = _ids(ingestion_ids)
    with engine.begin() as conn:  # fresh statistics: without them these joins can take minutes
        conn.exec_driver_sql("ANALYZE raw_records, dead_letters, ingestions")
    o = outcome(engine, ids)
    assert o.received == 0, f"{o.received} records still received: {o}"
    checked = _ids(answers.ingestion_ids) if answers is not None else ids
    with engine.connect() as conn:
        if answers is not None:
            _check_database(conn, registry, answers)
        stored = conn.execute(
            sa.text("SELECT id, accepted FROM ingestions WHERE id = ANY(:ids)"), {"ids": checked}
        ).all()
        assert len(stored) == len(checked), "an ingestion the API answered 202 for is missing"
        for ing_id, accepted in stored:
            n = conn.execute(
                sa.text("SELECT count(*) FROM raw_records WHERE ingestion_id = :i"), {"i": ing_id}
            ).scalar_one()
            assert n == accepted, f"ingestion {ing_id}: {accepted} accepted but {n} raw records"

        bad = conn.execute(
            sa.text(
                "SELECT r.id, r.status, d.raw_record_id, d.error_type, d.error, d.status AS dl_status "
                "FROM raw_records r LEFT JOIN dead_letters d ON d.raw_record_id = r.id "
                "WHERE r.ingestion_id = ANY(:ids) AND ("
                "  r.status NOT IN ('persisted', 'dead')"
                "  OR (r.status = 'dead' AND (d.raw_record_id IS NULL OR d.error IS NULL OR d.error = '' "
                "      OR d.error_type IS NULL OR d.status <> 'open'))"
                "  OR (r.status = 'persisted' AND d.raw_record_id IS NOT NULL AND d.status = 'open'))"
                " LIMIT 20"
            ),
            {"ids": checked},
        ).all()
        assert not bad, f"records neither persisted nor dead-lettered with their error: {bad}"

        types = [
            t
            for (t,) in conn.execute(
                sa.text("SELECT DISTINCT record_type FROM raw_records WHERE ingestion_id = ANY(:ids)"),
                {"ids": checked},
            )
        ]
        for record_type in types:
            _check_rows(conn, registry[record_type], checked, compare)
    return o


def _check_database(conn: sa.Connection, registry: Any, answers: Answers) -> None:
    """The test's database holds what the API answered 202 for, all of it settled, and nothing else."""
    told = {uuid.UUID(b["ingestion_id"]): b["accepted"] for b in answers.bodies}
    assert len(told) == len(answers.bodies), "the API answered 202 twice with one ingestion id"
    stored = dict(conn.execute(sa.text("SELECT id, accepted FROM ingestions")).all())
    unanswered = {str(i): n for i, n in stored.items() if i not in told}
    assert not unanswered, f"ingestions stored without a 202 (ingestion id: accepted): {unanswered}"
    miscounted = {str(i): (n, stored.get(i)) for i, n in told.items() if stored.get(i) != n}
    assert not miscounted, f"ingestions whose 202 said otherwise (id: (told, stored)): {miscounted}"

    statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM raw_records GROUP BY status")).all())
    assert set(statuses) <= {"persisted", "dead"}, f"raw records not settled: {statuses}"
    assert sum(statuses.values()) == answers.accepted, (
        f"{sum(statuses.values())} raw records, but the 202s accepted {answers.accepted}: {statuses}"
    )
    orphans = conn.execute(
        sa.text(
            "SELECT d.id, d.raw_record_id, d.status, r.status FROM dead_letters d "
            "LEFT JOIN raw_records r ON r.id = d.raw_record_id "
            "WHERE r.id IS NULL OR (d.status = 'open' AND r.status <> 'dead') LIMIT 5"
        )
    ).all()
    assert not orphans, f"dead letters without a dead raw record: {orphans}"
    for rt in registry:
        table = rt.table.name
        rows = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
        keys = conn.execute(
            sa.text(
                "SELECT count(DISTINCT natural_key) FROM raw_records WHERE record_type = :t AND status = 'persisted'"
            ),
            {"t": rt.name},
        ).scalar_one()
        assert rows == keys, f"{table} holds {rows} rows for {keys} persisted keys"


def _check_rows(conn: sa.Connection, rt: Any, ids: list[uuid.UUID], compare: Sequence[str]) -> None:
    table, key = rt.table.name, rt.key
    # The latest persisted raw record of each key (over every ingestion: a later one may win).
    winners = conn.execute(
        sa.text(
            "SELECT DISTINCT ON (natural_key) natural_key, id, ingestion_id, received_at, payload "
            "FROM raw_records WHERE record_type = :t AND status = 'persisted' AND natural_key IN "
            "  (SELECT natural_key FROM raw_records WHERE ingestion_id = ANY(:ids) AND status = 'persisted') "
            "ORDER BY natural_key, received_at DESC, id DESC"
        ),
        {"t": rt.name, "ids": ids},
    ).all()
    keys = [w.natural_key for w in winners]
    rows = {
        r._mapping[key]: r._mapping
        for r in conn.execute(sa.text(f'SELECT * FROM "{table}" WHERE "{key}" = ANY(:keys)'), {"keys": keys})
    }
    missing = [k for k in keys if k not in rows]
    assert not missing, f"{len(missing)} persisted {rt.name} have no row, e.g. {missing[:5]}"
    wrong = []
    for w in winners:
        row = rows[w.natural_key]
        lineage = (row["raw_record_id"], row["ingestion_id"], row["received_at"])
        if lineage != (w.id, w.ingestion_id, w.received_at):
            wrong.append((w.natural_key, "lineage", lineage, (w.id, w.ingestion_id, w.received_at)))
            continue
        for name in compare:
            if row[name] != w.payload.get(name):
                wrong.append((w.natural_key, name, row[name], w.payload.get(name)))
    assert not wrong, f"{len(wrong)} {rt.name} rows do not hold their latest record, e.g. {wrong[:5]}"
    # Dead records whose key never persisted have no row.
    ghosts = conn.execute(
        sa.text(
            f'SELECT r.natural_key FROM raw_records r JOIN "{table}" t ON t."{key}" = r.natural_key '
            "WHERE r.ingestion_id = ANY(:ids) AND r.status = 'dead' AND NOT EXISTS ("
            "  SELECT 1 FROM raw_records p WHERE p.record_type = r.record_type AND p.natural_key = r.natural_key"
            "  AND p.status = 'persisted') LIMIT 5"
        ),
        {"ids": ids},
    ).all()
    assert not ghosts, f"dead-lettered {rt.name} have a row anyway: {ghosts}"


# -- the report -------------------------------------------------------------------------------


def report(scenario: str, o: Outcome, settle_seconds: float, *, broker: str | None = None, **extra: Any) -> None:
    """One line of the session's summary: ``scenario [broker]`` (the test's broker fixture's, or
    ``broker``), the outcome and ``extra`` figures."""
    line = {
        "scenario": f"{scenario} [{broker or CURRENT_BROKER['name']}]",
        "submitted": o.accepted,
        "persisted": o.persisted,
        "dead": o.dead,
        "dead_by_type": dict(o.dead_by_type),
        "settle_s": round(settle_seconds, 1),
        **extra,
    }
    RESULTS.append(line)
    print(f"\n[fault report] {line}")


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0


# -- process logs -----------------------------------------------------------------------------


def log_count(proc: Any, needle: str) -> int:
    """How often ``needle`` occurs in a process's log."""
    return proc.log().count(needle)


def sweeper_runs(worker: Any) -> int:
    """How many times the worker was given the outbox sweeper to run."""
    return len(re.findall(r"Task etl\.beat\.outbox-sweeper\[[^\]]+\] received", worker.log()))


def relayed(web: Any) -> int:
    """Records the web process's outbox relay sent once the broker was back, by its log."""
    return sum(int(n) for n in re.findall(r"outbox relay: broker back, sent (\d+) records", web.log()))


def unpublished(web: Any) -> int:
    """Records the web process stored but could not publish at once (the broker was down), by its
    log: the relay or the sweeper sent them later."""
    return sum(int(n) for n in re.findall(r"could not publish ingestion \S+ \((\d+) records\)", web.log()))


def swept(worker: Any) -> int:
    """Records the outbox sweeper re-enqueued, by the log of the worker that ran it."""
    return sum(int(n) for n in re.findall(r"outbox sweeper re-enqueued (\d+) records", worker.log()))


# -- the broker ---------------------------------------------------------------------------------


def pipeline_messages(client: Any, prefix: str, queued: bool = True) -> int:
    """Pipeline task messages the broker holds for this prefix: queued (unless ``queued`` is
    false), or delivered and not acknowledged yet (reserved or running, or waiting for a retry
    countdown). Beat's sweeper is not counted."""

    def task_of(raw: bytes) -> str:
        body = json.loads(raw)
        message = body[0] if isinstance(body, list) else body  # unacked entries: [message, exchange, key]
        return (message.get("headers") or {}).get("task", "")

    raws = list(client.lrange(f"{prefix}etl", 0, -1)) if queued else []
    raws += list(client.hvals(f"{prefix}unacked"))
    return sum(1 for raw in raws if task_of(raw) in PIPELINE_TASKS)
