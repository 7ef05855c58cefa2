"""Giving up on records waiting for their parents, as the API and the pages offer it (audited
``give_up`` under the request's key; etl_app.dead_letters.waiting)."""

from __future__ import annotations

from typing import Any

from etl_app.dead_letters import waiting
from etl_app.web.context import audited, current_runtime


def give_up_now(selector: waiting.Selector) -> waiting.GivenUp:
    """Dead-letter the records of ``selector`` that wait for a parent, now; audited ``give_up``
    with the selector as target and the count; then the ingestions they settled are measured."""
    runtime = current_runtime()
    with audited("give_up", selector.describe(), count=None) as (conn, entry):
        given = waiting.give_up(conn, selector, who=entry.key_id)
        entry.count = given.count
    with runtime.engine.connect() as conn:
        waiting.settle_given_up(conn, runtime.registry, runtime.settings, given)
    return given


def parse(params: dict[str, Any]) -> waiting.Selector:
    """The selector of a request's parameters (the dead-letter errors on a bad one)."""
    return waiting.parse_selector(params, current_runtime().registry.names())
