"""OpenLineage run events per ingestion (opt-in: ``OPENLINEAGE_URL``).

Each ingestion is one run of the job ``ingest.<record_type>`` in ``OPENLINEAGE_NAMESPACE``; the
run id is the ingestion id (a UUID), so that START (:func:`started`, sent by the process that
created the ingestion) and COMPLETE or FAIL (:func:`settled`, sent by the worker that saw it
settle) are one run. The output dataset is the record type's table, named as OpenLineage names
PostgreSQL tables (namespace ``postgres://host:port``, name ``<database>.public.<table>``); an
upload's file is an input dataset (namespace ``upload``, name the file name). The settled event
carries on the output dataset:

- ``outputStatistics``: ``rowCount`` = records persisted;
- ``dataQualityMetrics`` (the spec's DataQualityMetricsDatasetFacet): ``rowCount`` = records
  accepted (the rows measured), ``columnMetrics.<field>.nullCount`` = accepted records without
  the field (from completeness), ``captureDate`` = the event time;
- ``etl_app_quality`` (custom): the service's own measures (score, level, validity, completeness,
  uniqueness, integrity, timeliness, counts).

Events never block or fail the pipeline: the callers only put them on a bounded queue (a full
queue drops the event, with a warning), one daemon thread per process builds and posts them with
short timeouts, and delivery errors are logged, never raised. The thread is started lazily in the
process that emits (a forked Celery pool child starts its own); what is queued at exit is flushed
for at most :data:`EXIT_FLUSH_SECONDS`. With ``OPENLINEAGE_URL`` unset both calls return at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from etl_app import __version__

log = logging.getLogger(__name__)

PRODUCER = f"urn:etl_app:{__version__}"
QUALITY_FACET = "etl_app_quality"
INGESTION_FACET = "etl_app_ingestion"
UPLOAD_NAMESPACE = "upload"
QUEUE_SIZE = 1_000
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
EXIT_FLUSH_SECONDS = 2.0
WARN_EVERY_SECONDS = 60.0
# One quick retry of a refused connection or a 5xx answer; a read that timed out is not repeated.
RETRY = {
    "total": 1,
    "connect": 1,
    "read": 0,
    "status": 1,
    "backoff_factor": 0.2,
    "status_forcelist": [500, 502, 503, 504],
    "allowed_methods": ["POST"],
}


# -- the calls --------------------------------------------------------------------------------------


def started(settings: Any, ingestion: Mapping[str, Any]) -> None:
    """A START event for a just-committed ingestion ``{id, record_type, source, created_at,
    filename}`` (``filename``: an upload's, else None). Never raises, never waits."""
    if settings.openlineage_url:
        _submit(settings, "START", ingestion)


def enabled(settings: Any) -> bool:
    """Whether events are sent at all (``OPENLINEAGE_URL`` is set): callers skip reading what
    an event would carry when none is."""
    return bool(settings.openlineage_url)


def settled(settings: Any, report: Mapping[str, Any]) -> None:
    """A COMPLETE event (FAIL when ``report["status"]`` is ``failed``) for a settled ingestion;
    ``report`` is the body of ``GET /api/v1/ingestions/{id}``. Never raises, never waits."""
    if settings.openlineage_url:
        _submit(settings, "SETTLED", report)


def flush(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Wait (at most ``timeout`` seconds) until every queued event of this process is sent or
    given up; True if the queue is empty."""
    emitter = _emitter
    if emitter is None or emitter.pid != os.getpid():
        return True
    return emitter.wait_empty(timeout)


def preload(settings: Any) -> None:
    """Import the OpenLineage client now (about 1.5 s of imports, once per process) rather than on
    the sender thread at the first event; for a process that starts and may exit soon after its
    first event (the exit flush waits at most :data:`EXIT_FLUSH_SECONDS`). A no-op when off."""
    if settings.openlineage_url:
        import openlineage.client.event_v2
        import openlineage.client.facet_v2
        import openlineage.client.transport.http  # noqa: F401


# -- the background sender --------------------------------------------------------------------------


class _Throttled:
    """A warning at most once per :data:`WARN_EVERY_SECONDS`, counting the ones held back."""

    def __init__(self) -> None:
        self.last = float("-inf")
        self.held = 0

    def warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < WARN_EVERY_SECONDS:
            self.held += 1
            return
        if self.held:
            message += " (%d more since the last warning)"
            args = (*args, self.held)
        self.last, self.held = now, 0
        log.warning(message, *args)


class _Emitter:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue[tuple[tuple[str, str, str, str, str], str, dict[str, Any]]] = queue.Queue(QUEUE_SIZE)
        self.dropped = _Throttled()
        self.failed = _Throttled()
        self.transports: dict[tuple[str, str, str], Any] = {}
        self.thread = threading.Thread(target=self._run, name="openlineage-emitter", daemon=True)
        self.thread.start()

    def put(self, item: tuple[tuple[str, str, str, str, str], str, dict[str, Any]]) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped.warn(
                "OpenLineage: %d events queued, event for ingestion %s dropped", QUEUE_SIZE, item[2].get("id")
            )

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        done = self.queue.all_tasks_done
        with done:
            while self.queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            config, kind, data = self.queue.get()
            try:
                url, endpoint, api_key, namespace, database_url = config
                event = build_event(kind, data, namespace=namespace, database_url=database_url)
                self._transport(url, endpoint, api_key).emit(event)
            except Exception as exc:  # noqa: BLE001 - lineage must never disturb the pipeline
                self.failed.warn(
                    "OpenLineage: %s event for ingestion %s not sent: %s",
                    event_type(kind, data),
                    data.get("id"),
                    _describe(exc),
                )
            finally:
                self.queue.task_done()

    def _transport(self, url: str, endpoint: str, api_key: str) -> Any:
        key = (url, endpoint, api_key)
        transport = self.transports.get(key)
        if transport is None:
            from openlineage.client.transport.http import (
                ApiKeyTokenProvider,
                HttpConfig,
                HttpTransport,
                TokenProvider,
            )

            from etl_app import logs

            logs.add_secrets(url, api_key)
            transport = HttpTransport(
                HttpConfig(
                    url=url,
                    endpoint=endpoint,
                    timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),  # type: ignore[arg-type]  # requests' pair
                    auth=ApiKeyTokenProvider({"apiKey": api_key}) if api_key else TokenProvider({}),
                    retry=dict(RETRY),
                )
            )
            self.transports[key] = transport
        return transport


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


_emitter: _Emitter | None = None
_lock = threading.Lock()


def _reset_after_fork() -> None:
    """A forked child owns none of its parent's thread, queue or lock: it starts its own."""
    global _emitter, _lock
    _emitter = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _submit(settings: Any, kind: str, data: Mapping[str, Any]) -> None:
    try:
        emitter = _emitter
        if emitter is None or emitter.pid != os.getpid():
            emitter = _start()
        config = (
            settings.openlineage_url,
            settings.openlineage_endpoint,
            settings.openlineage_api_key,
            settings.openlineage_namespace,
            settings.database_url,
        )
        emitter.put((config, kind, dict(data)))
    except Exception:  # lineage must never disturb the pipeline
        log.warning("OpenLineage: event for ingestion %s not queued", data.get("id"), exc_info=True)


def _start() -> _Emitter:
    global _emitter
    with _lock:
        if _emitter is None or _emitter.pid != os.getpid():
            _emitter = _Emitter()
            _hook_celery_child_exit()
        return _emitter


atexit.register(flush, EXIT_FLUSH_SECONDS)  # a no-op in a process that sent nothing


def _hook_celery_child_exit() -> None:
    """A Celery pool child leaves with ``os._exit`` (no atexit): flush on its shutdown signal."""
    if "celery" not in sys.modules:
        return
    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(_flush_on_signal, weak=False)


def _flush_on_signal(**_: Any) -> None:
    flush(EXIT_FLUSH_SECONDS)


# -- the events -------------------------------------------------------------------------------------


def event_type(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "START":
        return "START"
    return "FAIL" if data.get("status") == "failed" else "COMPLETE"


def job_name(record_type: str) -> str:
    return f"ingest.{record_type}"


def table_dataset(database_url: str, table: str) -> tuple[str, str]:
    """OpenLineage's name of a PostgreSQL table: ``postgres://host:port`` and
    ``<database>.public.<table>`` (no user, no password)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(database_url)
        host, port, database = url.host or "localhost", url.port or 5432, url.database or "postgres"
    except Exception:  # noqa: BLE001 - an unreadable URL still names the table
        return "postgres://unknown", f"public.{table}"
    return f"postgres://{host}:{port}", f"{database}.public.{table}"


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat()
    return str(value)


def _upload_name(data: Mapping[str, Any]) -> str | None:
    if data.get("filename"):
        return str(data["filename"])
    upload = data.get("upload")
    if isinstance(upload, Mapping):
        name = upload.get("filename") or upload.get("name")
        return str(name) if name else None
    return str(upload) if upload else None


def _facet_classes():
    """The custom facets, defined on first use (the client is imported only when events are on)."""
    global _FACETS
    if _FACETS is None:
        import attr
        from openlineage.client.facet_v2 import DatasetFacet, RunFacet

        @attr.define
        class EtlAppQualityDatasetFacet(DatasetFacet):
            """The service's quality measures of one ingestion (docs/quality.md)."""

            score: float | None = attr.field(default=None)
            level: str | None = attr.field(default=None)
            validity: float | None = attr.field(default=None)
            completeness: dict[str, Any] | None = attr.field(default=None)
            uniqueness: float | None = attr.field(default=None)
            integrity: float | None = attr.field(default=None)
            timeliness: dict[str, Any] | None = attr.field(default=None)
            counts: dict[str, Any] | None = attr.field(default=None)
            topErrors: list[Any] | None = attr.field(default=None)

            @staticmethod
            def _get_schema() -> str:
                return "urn:etl_app:facets:EtlAppQualityDatasetFacet:1-0-0"

        @attr.define
        class EtlAppIngestionRunFacet(RunFacet):
            """How the ingestion came in: ``api``, ``batch``, ``ndjson`` or ``upload``."""

            ingestionId: str
            recordType: str
            source: str | None = attr.field(default=None)

            @staticmethod
            def _get_schema() -> str:
                return "urn:etl_app:facets:EtlAppIngestionRunFacet:1-0-0"

        _FACETS = (EtlAppQualityDatasetFacet, EtlAppIngestionRunFacet)
    return _FACETS


_FACETS: tuple[Any, Any] | None = None


def build_event(kind: str, data: Mapping[str, Any], *, namespace: str, database_url: str):
    """The RunEvent of an ingestion (``kind`` START: the ingestion; else its settled report)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        data_quality_metrics_dataset as dqm,
    )
    from openlineage.client.facet_v2 import (
        job_type_job,
        output_statistics_output_dataset,
    )

    quality_facet, ingestion_facet = _facet_classes()
    run_id = str(uuid.UUID(str(data["id"])))
    record_type = str(data["record_type"])
    etype = event_type(kind, data)
    if kind == "START":
        event_time = _iso(data.get("created_at"))
    else:
        event_time = _iso(data.get("finished_at"))
    event_time = event_time or datetime.now(UTC).isoformat()

    ds_namespace, ds_name = table_dataset(database_url, record_type)
    dataset_facets: dict[str, Any] = {}
    output_facets: dict[str, Any] = {}
    if kind != "START":
        counts = data.get("counts") or {}
        quality = data.get("quality") or {}
        accepted = counts.get("received")
        output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=counts.get("persisted"), producer=PRODUCER
        )
        completeness = quality.get("completeness") or {}
        columns = {}
        if isinstance(accepted, int):
            for field, share in completeness.items():
                if field != "overall" and isinstance(share, int | float):
                    columns[field] = dqm.ColumnMetrics(nullCount=round((1 - share) * accepted), quantiles=None)
        dataset_facets["dataQualityMetrics"] = dqm.DataQualityMetricsDatasetFacet(
            columnMetrics=columns, rowCount=accepted, captureDate=event_time, producer=PRODUCER
        )
        dataset_facets[QUALITY_FACET] = quality_facet(
            score=quality.get("score"),
            level=quality.get("level"),
            validity=quality.get("validity"),
            completeness=completeness or None,
            uniqueness=quality.get("uniqueness"),
            integrity=quality.get("integrity"),
            timeliness=quality.get("timeliness"),
            counts=dict(counts) or None,
            topErrors=quality.get("top_errors") or None,
            producer=PRODUCER,
        )
    outputs = [OutputDataset(ds_namespace, ds_name, facets=dataset_facets, outputFacets=output_facets)]
    upload = _upload_name(data)
    inputs = [InputDataset(UPLOAD_NAMESPACE, upload)] if upload else []
    return RunEvent(
        eventType=RunState[etype],
        eventTime=event_time,
        run=Run(
            runId=run_id,
            facets={
                INGESTION_FACET: ingestion_facet(
                    ingestionId=run_id, recordType=record_type, source=data.get("source"), producer=PRODUCER
                )
            },
        ),
        job=Job(
            namespace=namespace,
            name=job_name(record_type),
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="ETL_APP", jobType="INGESTION", producer=PRODUCER
                )
            },
        ),
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )
