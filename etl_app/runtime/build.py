"""Building a process's :class:`~etl_app.runtime.Runtime`: the service's (``create_app``) or a
command's (one connection)."""

from __future__ import annotations

from etl_app.config import Settings
from etl_app.db import make_engine
from etl_app.ingest.relay import Relay
from etl_app.lookups.geocoder import geocoder_provider
from etl_app.record_types import get_registry
from etl_app.runtime import Runtime
from etl_app.runtime.celery_app import make_celery


def build_runtime(
    settings: Settings,
    *,
    application_name: str = "etl_app",
    pool_size: int | None = None,
    max_overflow: int = 5,
    with_relay: bool = True,
) -> Runtime:
    """The runtime of a process; raises ValueError when the geocoder is configured wrong
    (ETL_GEOCODER_URL, ETL_GEOCODER_RATE) or ETL_SCHEMA_CONTRACT names a type that does not exist
    or asks what its table cannot hold, so that the process stops at its start."""
    registry = get_registry()
    registry.apply_contracts(settings.schema_contract, max_extra_bytes=settings.rejection_raw_bytes)
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size if pool_size is None else pool_size,
        max_overflow=max_overflow,
        application_name=application_name,
        keepalive_seconds=settings.db_keepalive_seconds,
    )
    celery = make_celery("etl_app", settings.broker_url, settings.broker_key_prefix)
    try:
        geocoder_provider(settings)  # the provider checks its own settings
    except ValueError as exc:
        raise ValueError(f"ETL_GEOCODER_URL / ETL_GEOCODER_RATE: {exc}") from None
    runtime = Runtime(settings=settings, engine=engine, registry=registry, celery=celery)
    if with_relay:
        runtime.relay = Relay(
            lambda: runtime.publisher,
            window=settings.relay_window_ms / 1000,
            max_window=settings.relay_max_window_ms / 1000,
            full=settings.chunk_size,
        )
    celery.etl = runtime
    return runtime
