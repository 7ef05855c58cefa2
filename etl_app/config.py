"""Settings, read from the environment in one place (12-factor)."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from etl_app.db import DEFAULT_KEEPALIVE_SECONDS
from etl_app.roles import parse_keys

MIB = 1024 * 1024
# Set by `etl-app run` when it runs as root and its banner said so: Celery's workers then skip
# their own superuser warning (etl_app.runtime.celery_app), which each of the three would print.
ROOT_NOTED_ENV = "ETL_ROOT_NOTED"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    return int(raw) if raw else default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


def project_dir() -> str | None:
    """The checkout etl_app runs from (a clone installed with ``pip install -e .``, as ``make
    install`` does): the folder above the package when it holds the project's setup.cfg and
    Procfile. None when the package was installed from a wheel into site-packages."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    is_checkout = all(os.path.isfile(os.path.join(root, name)) for name in ("setup.cfg", "Procfile"))
    return root if is_checkout else None


def var_dir(env: Mapping[str, str] | None = None) -> str:
    """Where local state lives (embedded servers, generated keys, the restart counts), as an
    absolute path: ``ETL_VAR_DIR``; else ``var`` in the project's checkout (:func:`project_dir`),
    whatever the current folder, so that every ``etl-app`` command finds what ``etl-app run``
    wrote; else (an installed wheel: no checkout) ``./var`` of the current folder."""
    env = os.environ if env is None else env
    configured = env.get("ETL_VAR_DIR", "").strip()
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(project_dir() or os.getcwd(), "var")


def var_dir_source(env: Mapping[str, str] | None = None) -> str:
    """Why :func:`var_dir` is where it is, for messages: the variable, the checkout or the folder."""
    env = os.environ if env is None else env
    if env.get("ETL_VAR_DIR", "").strip():
        return "ETL_VAR_DIR"
    return "the project's checkout" if project_dir() else "the current folder (no checkout: ETL_VAR_DIR unset)"


def embedded_env_path(env: Mapping[str, str] | None = None) -> str:
    """The file `etl-app run` writes the embedded servers' URLs to, so that any process finds them."""
    return os.path.join(var_dir(env), "embedded.env")


def read_env_file(path: str) -> dict[str, str]:
    """``NAME=value`` lines (as honcho's .env files), the value shell-quoted (as `etl-app run`
    writes it, for a shell to source) or as it is; a missing file is empty."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    name, value = line.split("=", 1)
                    value = value.strip()
                    if value[:1] in ("'", '"'):
                        with contextlib.suppress(ValueError):
                            value = "".join(shlex.split(value))
                    out[name.strip()] = value
    except FileNotFoundError:
        pass
    return out


def is_rabbitmq(url: str) -> bool:
    """A RabbitMQ (AMQP) broker URL (``amqp://``, ``amqps://``); any other is taken for Redis.
    (``celeryconfig.is_rabbitmq`` decides the same for the Celery settings.)"""
    return urlsplit(url).scheme.lower() in ("amqp", "amqps", "pyamqp")


def _budgets(raw: str) -> dict[str, int]:
    """``persistence=10,enrichment=3`` → ``{"persistence": 10, "enrichment": 3}``."""
    out: dict[str, int] = {}
    for part in raw.split(","):
        if part.strip():
            name, _, value = part.partition("=")
            out[name.strip()] = int(value)
    return out


@dataclass(frozen=True)
class Settings:
    """Every setting the service's code reads. See docs/configuration.md for the meanings;
    Celery's own settings (and ETL_SWEEP_INTERVAL_SECONDS, beat's schedule) are read by
    ``celeryconfig.py``."""

    database_url: str = ""
    redis_url: str = ""
    broker_url: str = ""
    broker_key_prefix: str = ""
    lookup_cache_url: str = ""  # unset: the lookups' cache-aside uses the cache Redis (redis_url)
    api_keys: tuple[str, ...] = ()  # entries `key` or `key:role` (etl_app.roles)
    metrics_keys: tuple[str, ...] = ()
    max_body_bytes: int = 10 * MIB
    max_batch_items: int = 50_000
    max_upload_bytes: int = 200 * MIB
    upload_max_field_bytes: int = MIB
    upload_max_row_bytes: int = 8 * MIB
    upload_max_decoded_bytes: int = 0  # unset: 5 times max_upload_bytes
    upload_max_expansion: int = 200
    upload_max_rows: int = 1_048_576
    request_header_seconds: float = 10.0  # connect (or previous answer) to the end of the headers
    request_read_seconds: float = 30.0  # the body: the longest pause, and the grace before the rate counts
    request_min_rate: int = 32 * 1024  # bytes/s: each one earns a body that much more time
    upload_max_shared_strings: int = 1_000_000
    upload_max_shared_strings_bytes: int = 32 * MIB
    chunk_size: int = 2_000
    rejection_raw_bytes: int = 8 * 1024  # a rejection's values as received, as JSON, stored up to this
    max_rejections_stored: int = 10_000  # rejections of one ingestion stored in full; the rest counted
    idempotency_ttl_seconds: int = 86_400  # how long a submit's Idempotency-Key and its answer are kept
    publish_timeout_seconds: float = 2.0
    outbox_lease_seconds: int = 300
    sweep_batch_size: int = 5_000
    sweep_max_records: int = 50_000
    retry_backoff_seconds: int = 2
    retry_backoff_max_seconds: int = 300
    parent_wait_seconds: int = 900
    transient_max_retries: int = 6
    retry_budgets: dict[str, int] = field(default_factory=dict)
    max_deliveries: int = 5
    db_pool_size: int = 5
    # TCP keepalives of every PostgreSQL connection (etl_app.db.make_engine); 0: the system's
    db_keepalive_seconds: int = DEFAULT_KEEPALIVE_SECONDS
    # backpressure (etl_app.ingest.backlog): 429 on submits while more records than this wait to
    # settle, or while one waits longer than this; 0 turns either off
    backlog_max_records: int = 1_000_000
    backlog_max_age_seconds: int = 3600
    relay_window_ms: int = 100
    relay_max_window_ms: int = 1000  # the relay's window grows to this while rounds are small
    raw_retention_days: int = 30
    rollup_days: int = 7
    job_batch_size: int = 5_000
    job_max_window_days: int = 366
    rate_limit: str = ""
    schema_contract: str = ""  # ETL_SCHEMA_CONTRACT: per-type overrides of the declared contracts
    bench_noop: bool = False  # POST /api/v1/_noop for `make bench` (etl_app.api.noop); off: no such route
    auth_failures_per_minute: int = 20  # per client address (etl_app.web.authfail); 0: off
    proxy_hops: int = 0  # reverse proxies whose X-Forwarded-For names the client address
    openlineage_url: str | None = None  # unset: no lineage events (etl_app.lineage.openlineage)
    openlineage_endpoint: str = "api/v1/lineage"
    openlineage_api_key: str = ""
    openlineage_namespace: str = "etl_app"
    geocoder_url: str | None = None  # unset: the geocoder is off (etl_app.lookups.geocoder)
    geocoder_ttl_seconds: int = 30 * 86400
    geocoder_rate: str = "10/second"
    geocoder_max_retries: int = 5  # retries of a chunk whose lookups failed (etl_app.pipeline.lookups)
    geocoder_backoff_seconds: float = 2.0  # first retry's wait, doubled at each retry
    geocoder_timeout_seconds: float = 5.0  # read timeout of one call (connect: 2 s)
    geocoder_breaker_failures: int = 5  # consecutive failed calls that open the geocoder's breaker
    geocoder_breaker_cooldown_seconds: float = 30.0  # open this long, then one probe call

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = dict(os.environ if env is None else env)
        for name, value in read_env_file(embedded_env_path(env)).items():
            env.setdefault(name, value)
        redis_url = env.get("REDIS_URL", "").strip()
        values = dict(
            database_url=env.get("DATABASE_URL", "").strip(),
            redis_url=redis_url,
            broker_url=env.get("CELERY_BROKER_URL", "").strip() or redis_url,
            broker_key_prefix=env.get("ETL_BROKER_KEY_PREFIX", "").strip(),
            lookup_cache_url=env.get("ETL_LOOKUP_CACHE_URL", "").strip(),
            api_keys=tuple(k.strip() for k in env.get("ETL_API_KEYS", "").split(",") if k.strip()),
            metrics_keys=tuple(k.strip() for k in env.get("ETL_METRICS_KEY", "").split(",") if k.strip()),
            max_body_bytes=_int(env, "ETL_MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch_items=_int(env, "ETL_MAX_BATCH_ITEMS", cls.max_batch_items),
            max_upload_bytes=_int(env, "ETL_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            upload_max_field_bytes=_int(env, "ETL_UPLOAD_MAX_FIELD_BYTES", cls.upload_max_field_bytes),
            upload_max_row_bytes=_int(env, "ETL_UPLOAD_MAX_ROW_BYTES", cls.upload_max_row_bytes),
            upload_max_decoded_bytes=_int(env, "ETL_UPLOAD_MAX_DECODED_BYTES", cls.upload_max_decoded_bytes),
            upload_max_expansion=_int(env, "ETL_UPLOAD_MAX_EXPANSION", cls.upload_max_expansion),
            upload_max_rows=_int(env, "ETL_UPLOAD_MAX_ROWS", cls.upload_max_rows),
            request_header_seconds=_float(env, "ETL_REQUEST_HEADER_SECONDS", cls.request_header_seconds),
            request_read_seconds=_float(env, "ETL_REQUEST_READ_SECONDS", cls.request_read_seconds),
            request_min_rate=_int(env, "ETL_REQUEST_MIN_RATE", cls.request_min_rate),
            upload_max_shared_strings=_int(env, "ETL_UPLOAD_MAX_SHARED_STRINGS", cls.upload_max_shared_strings),
            upload_max_shared_strings_bytes=_int(
                env, "ETL_UPLOAD_MAX_SHARED_STRINGS_BYTES", cls.upload_max_shared_strings_bytes
            ),
            chunk_size=_int(env, "ETL_CHUNK_SIZE", cls.chunk_size),
            rejection_raw_bytes=_int(env, "ETL_REJECTION_RAW_BYTES", cls.rejection_raw_bytes),
            max_rejections_stored=_int(env, "ETL_MAX_REJECTIONS_STORED", cls.max_rejections_stored),
            idempotency_ttl_seconds=_int(env, "ETL_IDEMPOTENCY_TTL_SECONDS", cls.idempotency_ttl_seconds),
            publish_timeout_seconds=_float(env, "ETL_PUBLISH_TIMEOUT_SECONDS", cls.publish_timeout_seconds),
            outbox_lease_seconds=_int(env, "ETL_OUTBOX_LEASE_SECONDS", cls.outbox_lease_seconds),
            sweep_batch_size=_int(env, "ETL_SWEEP_BATCH_SIZE", cls.sweep_batch_size),
            sweep_max_records=_int(env, "ETL_SWEEP_MAX_RECORDS", cls.sweep_max_records),
            retry_backoff_seconds=_int(env, "ETL_RETRY_BACKOFF_SECONDS", cls.retry_backoff_seconds),
            retry_backoff_max_seconds=_int(env, "ETL_RETRY_BACKOFF_MAX_SECONDS", cls.retry_backoff_max_seconds),
            parent_wait_seconds=_int(env, "ETL_PARENT_WAIT_SECONDS", cls.parent_wait_seconds),
            transient_max_retries=_int(env, "ETL_TRANSIENT_MAX_RETRIES", cls.transient_max_retries),
            retry_budgets=_budgets(env.get("ETL_RETRY_BUDGETS", "")),
            max_deliveries=_int(env, "ETL_MAX_DELIVERIES", cls.max_deliveries),
            db_pool_size=_int(env, "ETL_DB_POOL_SIZE", cls.db_pool_size),
            db_keepalive_seconds=_int(env, "ETL_DB_KEEPALIVE_SECONDS", cls.db_keepalive_seconds),
            backlog_max_records=_int(env, "ETL_BACKLOG_MAX_RECORDS", cls.backlog_max_records),
            backlog_max_age_seconds=_int(env, "ETL_BACKLOG_MAX_AGE_SECONDS", cls.backlog_max_age_seconds),
            relay_window_ms=_int(env, "ETL_RELAY_WINDOW_MS", cls.relay_window_ms),
            relay_max_window_ms=_int(env, "ETL_RELAY_MAX_WINDOW_MS", cls.relay_max_window_ms),
            raw_retention_days=_int(env, "ETL_RAW_RETENTION_DAYS", cls.raw_retention_days),
            rollup_days=_int(env, "ETL_ROLLUP_DAYS", cls.rollup_days),
            job_batch_size=_int(env, "ETL_JOB_BATCH_SIZE", cls.job_batch_size),
            job_max_window_days=_int(env, "ETL_JOB_MAX_WINDOW_DAYS", cls.job_max_window_days),
            rate_limit=env.get("ETL_RATE_LIMIT", "").strip(),
            schema_contract=env.get("ETL_SCHEMA_CONTRACT", "").strip(),
            bench_noop=env.get("ETL_BENCH_NOOP", "").strip().lower() in ("1", "true", "yes", "on"),
            auth_failures_per_minute=_int(env, "ETL_AUTH_FAILURES_PER_MINUTE", cls.auth_failures_per_minute),
            proxy_hops=_int(env, "ETL_PROXY_HOPS", cls.proxy_hops),
            openlineage_url=env.get("OPENLINEAGE_URL", "").strip() or None,
            openlineage_endpoint=env.get("OPENLINEAGE_ENDPOINT", "").strip() or cls.openlineage_endpoint,
            openlineage_api_key=env.get("OPENLINEAGE_API_KEY", "").strip(),
            openlineage_namespace=env.get("OPENLINEAGE_NAMESPACE", "").strip() or cls.openlineage_namespace,
            geocoder_url=env.get("ETL_GEOCODER_URL", "").strip() or None,
            geocoder_ttl_seconds=_int(env, "ETL_GEOCODER_TTL_SECONDS", cls.geocoder_ttl_seconds),
            geocoder_rate=env.get("ETL_GEOCODER_RATE", "").strip() or cls.geocoder_rate,
            geocoder_max_retries=_int(env, "ETL_GEOCODER_MAX_RETRIES", cls.geocoder_max_retries),
            geocoder_backoff_seconds=_float(env, "ETL_GEOCODER_BACKOFF_SECONDS", cls.geocoder_backoff_seconds),
            geocoder_timeout_seconds=_float(env, "ETL_GEOCODER_TIMEOUT_SECONDS", cls.geocoder_timeout_seconds),
            geocoder_breaker_failures=_int(env, "ETL_GEOCODER_BREAKER_FAILURES", cls.geocoder_breaker_failures),
            geocoder_breaker_cooldown_seconds=_float(
                env, "ETL_GEOCODER_BREAKER_COOLDOWN_SECONDS", cls.geocoder_breaker_cooldown_seconds
            ),
        )
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in known})
        settings = cls(**values)
        settings.check()
        return settings

    @property
    def upload_decoded_bytes(self) -> int:
        """ETL_UPLOAD_MAX_DECODED_BYTES, else 5 times ETL_MAX_UPLOAD_BYTES."""
        return self.upload_max_decoded_bytes or 5 * self.max_upload_bytes

    def max_retries(self, error_type: str) -> int:
        """Retries allowed for a transient error of this type (ETL_RETRY_BUDGETS, else the default)."""
        return self.retry_budgets.get(error_type, self.transient_max_retries)

    @property
    def broker_is_rabbitmq(self) -> bool:
        """CELERY_BROKER_URL is RabbitMQ's: the broker holds the queues only; the stash, caches,
        rate limits and counters stay on the cache Redis (REDIS_URL)."""
        return is_rabbitmq(self.broker_url)

    def check(self) -> None:
        parse_keys(self.api_keys)  # an unknown role stops the service at start
        if self.broker_is_rabbitmq and not self.redis_url:
            raise ValueError(
                "REDIS_URL is not set: with a RabbitMQ broker (CELERY_BROKER_URL=amqp://…) the stash, "
                "caches and rate limits still live on Redis; set REDIS_URL (`etl-app run` starts an "
                "embedded one when it is unset)"
            )
        scheme = urlsplit(self.lookup_cache_url).scheme
        if self.lookup_cache_url and scheme not in ("redis", "rediss", "unix"):  # the URL may hold a password
            raise ValueError(f"ETL_LOOKUP_CACHE_URL must be a redis://, rediss:// or unix:// URL, not {scheme!r}")
        if self.chunk_size < 1:
            raise ValueError("ETL_CHUNK_SIZE must be at least 1")
        if self.db_keepalive_seconds < 0:
            raise ValueError("ETL_DB_KEEPALIVE_SECONDS must be at least 0 (0: the system's defaults)")
        if not 0 <= self.relay_max_window_ms <= 4000:  # below the sweeper's grace for unpublished records (5 s)
            raise ValueError("ETL_RELAY_MAX_WINDOW_MS must be between 0 and 4000")
        if self.rejection_raw_bytes < 1024:
            raise ValueError("ETL_REJECTION_RAW_BYTES must be at least 1024")
        if self.max_rejections_stored < 0:
            raise ValueError("ETL_MAX_REJECTIONS_STORED must be at least 0")
        if self.idempotency_ttl_seconds < 1:
            raise ValueError("ETL_IDEMPOTENCY_TTL_SECONDS must be at least 1")
        for name in ("upload_max_field_bytes", "upload_max_row_bytes", "upload_max_expansion", "upload_max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"ETL_{name.upper()} must be at least 1")
        if self.upload_max_decoded_bytes < 0:
            raise ValueError("ETL_UPLOAD_MAX_DECODED_BYTES must be at least 1 (or unset)")
        if self.raw_retention_days < 1:
            raise ValueError("ETL_RAW_RETENTION_DAYS must be at least 1")
        if self.rollup_days < 1:
            raise ValueError("ETL_ROLLUP_DAYS must be at least 1")
        if self.job_batch_size < 1:
            raise ValueError("ETL_JOB_BATCH_SIZE must be at least 1")
        if self.job_max_window_days < 1:
            raise ValueError("ETL_JOB_MAX_WINDOW_DAYS must be at least 1")
        if self.rate_limit:
            from limits import parse_many

            try:
                parse_many(self.rate_limit)
            except ValueError:
                raise ValueError(
                    f"ETL_RATE_LIMIT must be in flask-limiter's notation, e.g. 100/second;5000/minute: "
                    f"{self.rate_limit!r}"
                ) from None
        if self.backlog_max_records < 0 or self.backlog_max_age_seconds < 0:
            raise ValueError("ETL_BACKLOG_MAX_RECORDS and ETL_BACKLOG_MAX_AGE_SECONDS must be at least 0 (0: off)")
        if self.schema_contract:
            from etl_app.record_types.contract import parse_overrides

            parse_overrides(self.schema_contract)  # its form; the types are checked against the registry
        if self.auth_failures_per_minute < 0 or self.proxy_hops < 0:
            raise ValueError("ETL_AUTH_FAILURES_PER_MINUTE and ETL_PROXY_HOPS must be at least 0")
        if self.geocoder_breaker_failures < 1 or self.geocoder_breaker_cooldown_seconds < 1:
            raise ValueError(
                "ETL_GEOCODER_BREAKER_FAILURES must be at least 1, ETL_GEOCODER_BREAKER_COOLDOWN_SECONDS at least 1"
            )
        if self.geocoder_max_retries < 0 or self.geocoder_backoff_seconds <= 0 or self.geocoder_timeout_seconds <= 0:
            raise ValueError(
                "ETL_GEOCODER_MAX_RETRIES must be at least 0, "
                "ETL_GEOCODER_BACKOFF_SECONDS and ETL_GEOCODER_TIMEOUT_SECONDS above 0"
            )
        visibility = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
        if not self.broker_is_rabbitmq and self.retry_backoff_max_seconds * 2 > visibility:
            raise ValueError(
                "ETL_RETRY_BACKOFF_MAX_SECONDS must stay well below the broker visibility timeout "
                f"({visibility}s): a countdown longer than it is delivered twice"
            )
