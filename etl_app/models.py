"""Every table of the service in one place, for Alembic (``migrations/env.py``) and for the code
that names a status: each table is defined beside its domain (``etl_app/<domain>/tables.py``)
and gathered here. Also :func:`sql`, which binds the statuses a statement names, and
:func:`json_list` / :func:`json_array`, how the hot statements take a chunk's lists."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app import errors
from etl_app.audit.tables import AUDIT_ACTIONS, AUDIT_OUTCOMES, AuditEntry
from etl_app.db import TSTZ
from etl_app.dead_letters.tables import (
    DEAD_LETTER_STATUSES,
    DISCARDED,
    GROUP_KEY_SQL,
    OPEN,
    OUTCOMES,
    REPLAYED,
    SUPERSEDED,
    DeadLetter,
    DeadLetterEdit,
)
from etl_app.ingest.tables import (
    DEAD,
    PERSISTED,
    RECEIVED,
    REJECTED,
    STATUSES,
    IdempotencyKey,
    Ingestion,
    RawRecord,
    Rejection,
    unsettled_by_id,
    unsettled_by_ingestion,
)
from etl_app.jobs.tables import FAILED, JOB_RUN_STATUSES, JOB_TRIGGERS, RUNNING, SKIPPED, SUCCEEDED, JobRun
from etl_app.quality.tables import DailyQuality, TutorDailyMetrics
from etl_app.sessions import UiSession
from etl_app.uploads.tables import PARSED, PARSING, STORED, UPLOAD_STATUSES, Upload, UploadChunk

__all__ = [
    "AUDIT_ACTIONS",
    "AUDIT_OUTCOMES",
    "DEAD",
    "DEAD_LETTER_STATUSES",
    "DISCARDED",
    "FAILED",
    "GROUP_KEY_SQL",
    "JOB_RUN_STATUSES",
    "JOB_TRIGGERS",
    "NAMED_VALUES",
    "OPEN",
    "OUTCOMES",
    "PARSED",
    "PARSING",
    "PERSISTED",
    "RECEIVED",
    "REJECTED",
    "REPLAYED",
    "RUNNING",
    "SKIPPED",
    "STATUSES",
    "STORED",
    "SUCCEEDED",
    "SUPERSEDED",
    "TSTZ",
    "UPLOAD_STATUSES",
    "AuditEntry",
    "DailyQuality",
    "DeadLetter",
    "DeadLetterEdit",
    "IdempotencyKey",
    "Ingestion",
    "JobRun",
    "RawRecord",
    "Rejection",
    "TutorDailyMetrics",
    "UiSession",
    "Upload",
    "UploadChunk",
    "sql",
    "unsettled_by_id",
    "unsettled_by_ingestion",
]


# -- SQL text with the status names bound ----------------------------------------------------

# The values a SQL statement names by placeholder instead of spelling them, each under the name
# of its constant: ``:RECEIVED``, ``:OPEN``, ``:MISSING_PARENT``, ... (upper case, so they never
# collide with a statement's own lower-case parameters).
NAMED_VALUES = {
    value.upper(): value
    for value in (*STATUSES, *DEAD_LETTER_STATUSES, *UPLOAD_STATUSES, *JOB_RUN_STATUSES, *errors.ERROR_TYPES)
}
_PLACEHOLDER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # as sqlalchemy.text finds them


def sql(statement: str) -> sa.TextClause:
    """``sa.text(statement)`` with the placeholders named in :data:`NAMED_VALUES` bound to their
    values. They are rendered inline when the statement runs (``literal_execute``), so that
    PostgreSQL still proves a partial index's ``status = 'received'`` whatever plan it caches;
    callers pass only their own parameters."""
    names = sorted(set(_PLACEHOLDER.findall(statement)) & NAMED_VALUES.keys())
    binds = (sa.bindparam(n, NAMED_VALUES[n], type_=sa.Text, literal_execute=True) for n in names)
    return sa.text(statement).bindparams(*binds)


def json_list(values: Iterable[Any]) -> str:
    """A list parameter (a chunk's ids, its keys) as one JSON array, for :func:`json_array`.

    psycopg adapts a Python list to a PostgreSQL array element by element in Python, a few µs
    each: tens of ms for the lists of a chunk of 2,000, paid by every stage. orjson writes the
    whole list in one C call, and PostgreSQL reads it back as fast."""
    return orjson.dumps(values if isinstance(values, list) else list(values)).decode()


def json_array(param: str, pg_type: str = "text") -> str:
    """SQL for the array of ``pg_type`` that the :func:`json_list` bound as ``:param`` holds;
    ``x = ANY(<it>)`` uses an index on ``x`` as ``x = ANY(:array)`` does (the array is computed
    once, before the scan)."""
    value = "v" if pg_type == "text" else f"CAST(v AS {pg_type})"
    return f"ARRAY(SELECT {value} FROM json_array_elements_text(CAST(:{param} AS json)) AS v)"
