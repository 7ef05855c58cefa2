"""Query plans for the plan tests: a statement's plan as JSON text, as PostgreSQL would run it."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.models import NAMED_VALUES


def json_plan(conn: sa.Connection, text: str, params: dict[str, Any]) -> str:
    """The plan of SQL ``text`` as JSON text, with its named statuses rendered as
    :func:`etl_app.models.sql` runs them (inline)."""
    for name in sorted(NAMED_VALUES, key=len, reverse=True):
        text = text.replace(f":{name}", f"'{NAMED_VALUES[name]}'")
    return orjson.dumps(conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {text}"), params).scalar_one()).decode()


def scans(plan: str) -> set[tuple[str, str]]:
    """(node type, relation or index name) of every node of a :func:`json_plan` that reads one."""
    found: set[tuple[str, str]] = set()

    def walk(node: dict) -> None:
        for name in ("Relation Name", "Index Name"):
            if name in node:
                found.add((node["Node Type"], node[name]))
        for child in node.get("Plans", []):
            walk(child)

    walk(orjson.loads(plan)[0]["Plan"])
    return found
