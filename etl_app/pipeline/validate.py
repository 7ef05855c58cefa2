"""Load a chunk's unsettled raw records from the outbox and check them against their schema.

Records of a large API batch reach the worker with the values the API loaded (in the stash), so
their schema runs once. Records of small submissions, which the outbox relay sends as bare ids,
are checked here a second time, on purpose:

- the values the API loaded live only in the web process that accepted the records, and any web
  process's relay may claim them (each claims every unpublished record, so that those of a dead
  process go on);
- a marker on the outbox row ("the API validated this under schema version N") would save the
  checks but not the loading: the worker needs the loaded values (stripped strings, aware
  datetimes, defaults, as-of rules), and the fast path (``schemas.fast``) computes them in the
  same pass as it checks them;
- carrying the loaded values instead (a stash write per request, or a second jsonb document per
  outbox row) would add a Redis round trip or a second document's bytes to every single-record
  request, the path that must be fastest, to save the worker that much CPU;
- handing them in memory from the API to its own process's relay could pass on values for a
  payload that has since changed: a dead-lettered record replayed with an edited payload keeps
  its id, and nothing on the row would say so.

With the fast path the second check costs about 3 to 14 µs of CPU a record, where the schema alone
took 26 to 90 (``python -m bench.validators``, docs/benchmark.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa

from etl_app import errors
from etl_app.dead_letters.store import Failure
from etl_app.models import json_array, json_list, sql, unsettled_by_id
from etl_app.pipeline.stash import Item, item
from etl_app.record_types import RecordType

_LOAD = sql(
    "SELECT id, ingestion_id, payload, received_at, waiting_since FROM raw_records "
    f"WHERE id = ANY({json_array('ids', 'bigint')}) AND {unsettled_by_id()} ORDER BY id"
)


def load_raw(conn: sa.Connection, ids: Sequence[int]) -> list[sa.Row]:
    """The chunk's raw records that are still unsettled (settled ones are skipped: idempotence)."""
    return list(conn.execute(_LOAD, {"ids": json_list(ids)}))


def validate_chunk(record_type: RecordType, raws: Iterable[sa.Row]) -> tuple[list[Item], list[Failure]]:
    """Check every raw payload against its schema; split into items and validation failures."""
    items: list[Item] = []
    failures: list[Failure] = []
    for raw in raws:
        data, field_errors = record_type.validate(raw.payload, raw.received_at)
        if data is None:
            failures.append(Failure(raw.id, errors.VALIDATION, format_field_errors(field_errors)))
            continue
        items.append(item(raw.id, raw.ingestion_id, raw.received_at, raw.waiting_since, data))
    return items, failures


def format_field_errors(field_errors: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in field_errors.items())
