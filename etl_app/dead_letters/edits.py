"""Edited replays: a dead letter replayed with a corrected payload keeps the payload as it was,
the edit and the key id that made it (``dead_letter_edits``), in the replay's transaction. The
API's ``POST /api/v1/dead-letters/{id}/replay`` with a payload and the Dead letters page's "Edit
and replay" both go through :func:`edit_and_replay`; ``GET /api/v1/dead-letters/{id}`` and the
page show them (:func:`list_edits`, from :mod:`.queries`)."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.dead_letters import actions
from etl_app.dead_letters.queries import list_edits
from etl_app.record_types import Registry

_KEEP = sa.text(
    "INSERT INTO dead_letter_edits (dead_letter_id, raw_record_id, key_id, at, original, edited) "
    "SELECT id, raw_record_id, :key_id, clock_timestamp(), payload, CAST(:edited AS jsonb) "
    "FROM dead_letters WHERE id = :id"
)


def edit_and_replay(
    conn: sa.Connection, registry: Registry, dead_letter_id: int, payload: Any, *, key_id: str, may_submit: bool
) -> actions.Replayed:
    """Replay an open dead letter with a corrected ``payload`` (:func:`actions.replay`: validated
    again by its record type, :class:`InvalidPayload` and nothing changed when it does not pass;
    :class:`NotFound`, :class:`NotOpen`) and keep the edit: the dead letter's payload as it was,
    ``payload``, and ``key_id``, in the caller's transaction.

    Unless the key making the edit ``may_submit`` (has the submit right), the edit must keep the
    dead letter's natural key (:class:`KeyChanged` otherwise): an operator corrects the record
    that failed, and cannot write any record of any key through an edit."""
    replayed = actions.replay(conn, registry, dead_letter_id, payload, keep_key=not may_submit)  # locks it
    conn.execute(_KEEP, {"id": dead_letter_id, "key_id": key_id, "edited": orjson.dumps(payload).decode()})
    return replayed


__all__ = ["edit_and_replay", "list_edits"]
