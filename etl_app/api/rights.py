"""Which right each endpoint needs (etl_app.roles): one table, so that none is left out.

Every endpoint under /api/v1 must be listed here (tests/api/test_roles.py walks ``app.url_map``); one
that is not is refused to every key but an admin's, so a forgotten entry fails closed. Open
endpoints (no key at all) are in :data:`OPEN_ENDPOINTS`.
"""

from __future__ import annotations

from etl_app.roles import ANY, OPERATE, READ, SUBMIT

# /docs is a static page holding no data (its Swagger UI files under /docs/assets); it asks for
# the key and sends it for /openapi.json.
OPEN_ENDPOINTS = frozenset({"health.health", "health.ready", "openapi.docs", "openapi.docs_asset", "static"})

ENDPOINT_RIGHTS: dict[str, str] = {
    # submit
    "ingest.post_one": SUBMIT,
    "ingest.post_batch": SUBMIT,  # JSON array or NDJSON
    "uploads.post_upload": SUBMIT,  # a file
    # read
    "read.get_record": READ,
    "read.get_ingestion": READ,
    "read.list_ingestions": READ,
    "rejections.list_rejections": READ,
    "read.list_record_types": READ,
    "dead_letters.list_dead_letters": READ,
    "dead_letters.get_dead_letter": READ,
    "dead_letter_groups.list_groups": READ,
    "reports.get_quality": READ,
    "reports.get_tutor_metrics": READ,
    "jobs.list_jobs": READ,
    "jobs.show_job": READ,
    "audit.list_audit": READ,
    "providers.list_providers": READ,
    "waiting.list_waiting": READ,
    "metrics.metrics": READ,  # or a key of ETL_METRICS_KEY
    "openapi.openapi_json": ANY,
    # operate
    "dead_letters.replay_one": OPERATE,  # with a corrected payload: an edit
    "dead_letters.replay_bulk": OPERATE,
    "dead_letters.discard": OPERATE,
    "dead_letter_groups.replay_group": OPERATE,
    "dead_letter_groups.discard_group": OPERATE,  # with a reason
    "jobs.run_job_now": OPERATE,
    "providers.reset": OPERATE,  # a circuit breaker
    "waiting.give_up": OPERATE,  # records waiting for their parents
}

# Endpoints registered only with a setting (ETL_BENCH_NOOP: etl_app.api.noop), so not in the
# table above, which lists the routes every app serves.
OPTIONAL_ENDPOINT_RIGHTS: dict[str, str] = {"noop.noop": SUBMIT}

# A refusal (403) of these is written to the audit trail as the action it would
# have been (etl_app.audit.ACTIONS).
AUDITED_ENDPOINTS: dict[str, str] = {
    "dead_letters.replay_one": "replay",
    "dead_letters.replay_bulk": "bulk_replay",
    "dead_letters.discard": "discard",
    "dead_letter_groups.replay_group": "bulk_replay",
    "dead_letter_groups.discard_group": "bulk_discard",
    "jobs.run_job_now": "job_run",
    "providers.reset": "breaker_reset",
    "waiting.give_up": "give_up",
}


def right_for(endpoint: str) -> str | None:
    """The right ``endpoint`` needs; None for one that is not listed (only an admin passes)."""
    return ENDPOINT_RIGHTS.get(endpoint) or OPTIONAL_ENDPOINT_RIGHTS.get(endpoint)
