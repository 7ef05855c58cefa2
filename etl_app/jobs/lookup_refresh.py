"""lookup-refresh: stored records whose external lookups are to be asked again.

Which records, per record type with lookups and per provider that is on:
- ``lookup_status`` ``failed`` (the provider kept failing while they went through enrich), but
  not while the provider's breaker is open: a provider that is failing is not asked for them.
  Once its cool-down is over, a run asks for them, its first call being the breaker's probe: when
  the provider answers, the breaker closes and they are written; when it fails, the breaker opens
  again and they wait. An operator's reset closes it at once. So failed records are re-enriched
  after an outage even when no new record comes to probe the provider;
- ``skipped`` (the provider was off when they were enriched) and null (stored before the type had
  lookups), now that it is on;
- lookups older than the provider's TTL (``looked_up_at``), so answers are refreshed as the cache
  entries behind them expire.

Beat runs it every minute (``ETL_SCHEDULE_LOOKUP_REFRESH``), oldest lookups first, at most
``ETL_JOB_BATCH_SIZE`` records a run, through :func:`etl_app.lookups.lookup_chunk`: each distinct
value asked once, from the cache when it can, within the provider's shared rate limit. A record is
written only when its lookup got an answer (found, not found) or has no value; when the rate
limit or the breaker refuses, or the provider fails, the rest waits for the next run. A written
record gets its lookup fields, ``lookup_status``, ``looked_up_at`` and ``enriched_at``. The job's
row count is the records written. Refreshing old lookups here, a batch a minute, instead of in the
daily ``re-enrich``, spreads the calls under the rate limit rather than bursting once a day.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from etl_app.jobs.context import JobContext, JobTools
from etl_app.lookups.breaker import CLOSED, HALF_OPEN
from etl_app.lookups.metrics import breaker_for
from etl_app.lookups.provider import Provider
from etl_app.pipeline import lookups as step
from etl_app.record_types import RecordType

log = logging.getLogger(__name__)

ANSWERED = ("found", "not_found", "empty")


def run_lookup_refresh(ctx: JobContext, tools: JobTools) -> int:
    written = 0
    for record_type in tools.registry:
        if not record_type.lookups:
            continue
        providers = step.providers_for(record_type, ctx.settings)
        for provider in providers:
            if provider is None or not provider.enabled:
                continue
            written += _refresh(ctx, tools, record_type, provider, ctx.settings.job_batch_size)
    return written


def _refresh(ctx: JobContext, tools: JobTools, record_type: RecordType, provider: Provider, limit: int) -> int:
    table = record_type.table
    status, at = table.c[step.STATUS_FIELD], table.c[step.AT_FIELD]
    key = table.c[record_type.key]
    try:
        state = breaker_for(tools.cache, ctx.settings.broker_key_prefix, provider).state().state
    except Exception as exc:  # noqa: BLE001 - Redis down: the lookups would count it a miss; try anyway
        log.warning("lookup-refresh: the breaker of %s is unreadable (%s)", provider.name, exc)
        state = CLOSED
    due = [status.in_(("skipped",)), status.is_(None), at < ctx.now - timedelta(seconds=provider.ttl_seconds)]
    if state in (CLOSED, HALF_OPEN):
        # closed, or its cool-down is over: the first of these is the breaker's probe, so the
        # failed records are asked again once the provider is back, with no new record to probe
        due.append(status == "failed")
    rows = ctx.conn.execute(
        sa.select(key, *(table.c[name] for name in provider.reads))
        .where(sa.or_(*due))
        .order_by(at.asc().nulls_first(), key)
        .limit(limit)
    ).all()
    ctx.commit()  # no transaction open while the provider is asked
    if not rows:
        return 0
    items: list[Any] = [{"data": dict(row._mapping)} for row in rows]
    (result,) = step.look_up(
        [provider],
        items,
        redis=tools.cache,
        cache=tools.lookup_cache,
        http=step.http_client(),
        key_prefix=ctx.settings.broker_key_prefix,
        attempt=0,
    )
    if result is None:
        return 0
    filled = step.fill([provider], [result], items, ctx.now)
    updates = [
        {
            "_key": item["data"][record_type.key],
            **{f: item["data"].get(f) for f in (*provider.fills, step.STATUS_FIELD, step.AT_FIELD)},
        }
        for item in filled
        if item["data"][step.STATUS_FIELD] in ANSWERED
    ]
    if updates:
        columns = (*provider.fills, step.STATUS_FIELD, step.AT_FIELD)
        statement = (
            sa.update(table)
            .where(key == sa.bindparam("_key"))
            .values({name: sa.bindparam(name) for name in columns} | {"enriched_at": ctx.now})
        )
        ctx.conn.execute(statement, updates)
        ctx.commit()
    left = len(items) - len(updates)
    if left:
        log.info("lookup-refresh: %s of %s: %d written, %d wait for the next run", provider.name,
                 record_type.name, len(updates), left)  # fmt: skip
    return len(updates)
