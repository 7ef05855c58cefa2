"""The two exception families (transient: retry; permanent: dead-letter now) and the one mapping."""

from __future__ import annotations

import psycopg
import sqlalchemy.exc as sa_exc

# Error types (docs/dead-letters.md), as stored in dead_letters.error_type.
VALIDATION = "validation"
MISSING_PARENT = "missing_parent"
PARENT_MISMATCH = "parent_mismatch"
ENRICHMENT = "enrichment"
PERSISTENCE = "persistence"
INTERNAL = "internal"
ERROR_TYPES = (VALIDATION, MISSING_PARENT, PARENT_MISMATCH, ENRICHMENT, PERSISTENCE, INTERNAL)


class PipelineError(Exception):
    """Base of the pipeline's own errors; ``error_type`` is what a dead letter records."""

    error_type = INTERNAL


class TransientError(PipelineError):
    """Worth retrying with backoff: the world may be different next time."""


class PermanentError(PipelineError):
    """Retrying cannot help: dead-letter at once."""


class DatabaseUnavailable(TransientError):
    error_type = PERSISTENCE


class BrokerUnavailable(TransientError):
    error_type = INTERNAL


class RecordRefused(PermanentError):
    """The database refused the data itself (a value it cannot store)."""

    error_type = PERSISTENCE


def classify(exc: BaseException) -> type[PipelineError]:
    """Decide once whether an exception is transient or permanent, and of which error type."""
    if isinstance(exc, PipelineError):
        return type(exc)
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return DatabaseUnavailable
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable
    if isinstance(exc, (sa_exc.DataError, sa_exc.IntegrityError)):
        return RecordRefused
    # The same errors raised by psycopg itself, unwrapped: COPY runs on the driver's cursor.
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return DatabaseUnavailable
    if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):
        return RecordRefused
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - both ship with celery[redis]
        return PermanentError
    if isinstance(exc, (KombuOperationalError, RedisConnectionError, RedisTimeoutError, ConnectionError)):
        return BrokerUnavailable
    return PermanentError


def is_transient(exc: BaseException) -> bool:
    return issubclass(classify(exc), TransientError)


def error_type_of(exc: BaseException) -> str:
    return classify(exc).error_type if not isinstance(exc, PipelineError) else exc.error_type
