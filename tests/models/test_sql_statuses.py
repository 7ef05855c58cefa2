"""Status values are bound from the constants, never spelled in SQL strings, and reach PostgreSQL
inline: a partial index on ``status = 'received'`` then still serves the statement when
PostgreSQL caches a generic plan for it (with ``status = $1`` it could not prove the predicate
and would scan every row)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from etl_app.ingest import claim
from etl_app.models import sql


def test_the_claim_reaches_postgresql_with_its_statuses_inline(engine):
    sent: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    with engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", capture)
        claim.claim(conn, limit=1, grace=5, lease=300)
        conn.rollback()
    assert "status = 'received'" in sent[-1] and "RECEIVED" not in sent[-1]
    assert "%(grace)s" in sent[-1] and "%(limit)s" in sent[-1]  # the caller's own values stay parameters


def test_a_statement_names_statuses_by_their_constants_only(engine):
    with engine.connect() as conn:
        row = conn.execute(sql("SELECT :RECEIVED, :OPEN, :MISSING_PARENT, :rejected"), {"rejected": 3}).one()
    assert tuple(row) == ("received", "open", "missing_parent", 3)
    with pytest.raises(sa.exc.StatementError):  # a lower-case name is the caller's to give
        with engine.connect() as conn:
            conn.execute(sql("SELECT :received"))


def test_no_statement_of_the_code_spells_a_status_in_quotes():
    """Every status in SQL is a ``:NAME`` placeholder of :func:`etl_app.models.sql` (index
    predicates in the table definitions are the one place a status is written out; the lookup
    breaker's Lua script speaks of its own states, not of rows)."""
    import re
    from pathlib import Path

    from etl_app.models import NAMED_VALUES

    root = Path(__file__).resolve().parents[2]
    quoted = re.compile("'(" + "|".join(sorted(map(re.escape, set(NAMED_VALUES.values())))) + ")'")
    found = []
    breaker = root / "etl_app" / "lookups" / "breaker.py"
    for path in [*root.glob("etl_app/**/*.py"), *root.glob("tasks/*.py")]:
        if path == breaker:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if quoted.search(code) and "postgresql_where" not in code and "``" not in code:
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert found == []
