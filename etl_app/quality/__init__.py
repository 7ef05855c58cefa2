"""Data-quality metrics (docs/quality.md) of a set of records of one type, in one SQL statement.

:func:`quality_select` measures groups of raw records: a UTC day of a type (the daily-quality
job groups by ``received_at``'s day) or an ingestion (group by ``ingestion_id``). The groups are
given by two SQL expressions, one over ``raw_records r`` and one over ``ingestions i``, whose
values must agree for the records and the rejections of a group. Each output row is one group
(column ``k``), with ``payloads_dropped`` (accepted records whose payload the retention job has
dropped: their group cannot be measured again) and the columns of :data:`METRIC_COLUMNS`.

Rules (docs/quality.md, and the choices where the definitions are silent):
- ``accepted``: the group's raw records not ``rejected`` (received, persisted or dead: a record
  still in flight counts). ``rejected``: the ingestions' ``rejected`` counts (refused by the
  API) plus raw records ``rejected`` (upload rows refused at parsing), as in ingestion progress.
  A rejection counts on its ingestion's day (``ingestions.created_at``, the moment the API
  received the call, which is also its accepted records' ``received_at``).
- completeness: per input field of the schema (``source`` and ``event_time``, which every type
  accepts, are not the type's fields), the share of accepted records whose payload has the field
  with a value other than null or an all-space string (an empty optional string means null);
  listed in the schema's field order (:func:`in_schema_order`: jsonb keeps no order, so readers
  put it back). ``overall`` is the mean of the unrounded shares of the type's *expected* fields
  (``RecordType.expected``), null when it declares none; an expected field with a waiver counts
  as present in a record whose payload has the waiving value (a no-show's ``actual_start``), in
  its listed share too. Required fields are listed, not averaged; other optional fields are
  listed and lower nothing.
- integrity: a record counts against it while it *is* dead-lettered as ``missing_parent`` or
  ``parent_mismatch`` (raw record ``dead``); one a replay landed counts again as sound.
- timeliness: ``received_at`` minus the event time, in seconds (negative when the event is
  after receipt, e.g. a session booked ahead); event time = the payload's ``event_time``, else
  the type's ``time_field`` as given in the payload (a tutor's defaulted ``updated_at`` is not
  an event time). p50 and p95 are ``percentile_cont`` (linear interpolation).
- top_errors: ``{field, message, count}`` over the kept rejections (table ``rejections``) and
  the open validation dead letters (their ``field: message`` parts), most frequent first, ties
  by field and message.
- Every share and every second count is rounded to 4 decimals (half away from zero); score is
  the mean of the unrounded parts that are not null (validity, overall, uniqueness, integrity),
  rounded once, and level reads the rounded score.
- No accepted record: validity 0, every other metric null, level ``unusable``.
- dropped_fields and nulled_values (the type's schema contract, etl_app.record_types.contract):
  ``{total, fields: {field: count}}`` over the accepted records, read from their payloads as sent
  under the contract in force: with ``unknown=drop``, each field of a payload the schema does not
  declare counts once; with ``wrong_type=null``, each optional field whose value's JSON type is
  not the field's (``jsonb_typeof``, null aside). ``{total: 0, fields: {}}`` otherwise.
"""

from __future__ import annotations

from typing import Any

import orjson

from etl_app.record_types import RecordType
from etl_app.record_types.contract import DROP, NULL, json_type
from schemas.common import _TIMESTAMP_RE as SCHEMA_TIMESTAMP_RE

# The columns of a measured group, in order (after the group key ``k``).
METRIC_COLUMNS = (
    "received",
    "accepted",
    "rejected",
    "validity",
    "completeness",
    "uniqueness",
    "integrity",
    "timeliness_p50",
    "timeliness_p95",
    "timeliness_max",
    "score",
    "level",
    "top_errors",
)

# The levels, best first, with the lowest score each takes (docs/quality.md).
LEVELS = (("excellent", 0.95), ("good", 0.85), ("fair", 0.70), ("poor", 0.50))
UNUSABLE = "unusable"
TOP_ERRORS = 10

# Schema fields every type accepts that are not the type's own data.
SHARED_FIELDS = ("source", "event_time")

# What the schemas take as a timestamp, anchored for PostgreSQL's ``~`` (the expression uses only
# what both regular-expression engines read alike): the one pattern, so the two cannot drift.
_TIMESTAMP_RE = f"^{SCHEMA_TIMESTAMP_RE.pattern}$"


def quality_fields(record_type: RecordType) -> list[tuple[str, bool]]:
    """``(field, required)`` for every input field completeness is measured on, in schema order."""
    return [(name, f.required) for name, f in record_type.loader.fields.items() if name not in SHARED_FIELDS]


def level_of(share: float | None) -> str | None:
    """The level a score (or any share) falls in; None without a value."""
    if share is None:
        return None
    for name, low in LEVELS:
        if share >= low:
            return name
    return UNUSABLE


def in_schema_order(record_type: RecordType, completeness: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored ``completeness`` with its fields in the schema's order, then ``overall`` (jsonb
    keeps its keys sorted its own way); keys the schema no longer has keep their place at the end."""
    if completeness is None:
        return None
    order = [name for name, _ in quality_fields(record_type)]
    out = {name: completeness[name] for name in order if name in completeness}
    out.update((k, v) for k, v in completeness.items() if k not in out and k != "overall")
    if "overall" in completeness:
        out["overall"] = completeness["overall"]
    return out


def _given(text: str) -> str:
    """SQL: the payload text ``text`` holds a character other than white space (``~ '\\S'``).
    The regular expression runs only when the first character is not printable ASCII other than
    the space (which it would match at once): the same verdict, far less CPU. ``|2c - 159| <= 93``
    is ``33 <= c <= 126`` in one comparison (BETWEEN would compute ``ascii`` twice)."""
    return f"CASE WHEN abs(2 * ascii({text}) - 159) <= 93 THEN true ELSE {text} ~ '\\S' END"


def _present(record_type: RecordType, name: str, text: str, payload: str) -> str:
    """SQL: the field ``name`` counts as given in an accepted record whose ``payload ->> name`` is
    ``text``."""
    given = _given(text)
    for expected in record_type.expected_fields:
        if expected.field == name and expected.waived_when is not None:
            field, value = expected.waived_when
            waiver = _literal(orjson.dumps(value).decode())
            return f"({given} OR {payload} -> {_literal(field)} = CAST({waiver} AS jsonb))"
    return given


# What the schema contract set aside, per group: an addition to the metrics of METRIC_COLUMNS.
SET_ASIDE_COLUMNS = ("dropped_fields", "nulled_values")
_NONE_SET_ASIDE = "jsonb_build_object('total', 0, 'fields', CAST('{}' AS jsonb))"


def _set_aside(record_type: RecordType) -> str:
    """SQL rows ``(k, kind, field)`` over ``a``: one per field the contract dropped (kind
    'dropped_fields') or nulled ('nulled_values') in an accepted record; empty text when the
    contract rejects both."""
    contract, fields = record_type.contract, record_type.loader.load_fields
    parts = []
    if contract.unknown == DROP:
        known = ", ".join(_literal(name) for name in fields)
        parts.append(
            "SELECT a.k, 'dropped_fields' AS kind, e.key AS field FROM a CROSS JOIN LATERAL jsonb_object_keys("
            "CASE WHEN jsonb_typeof(a.payload) = 'object' THEN a.payload ELSE '{}' END) AS e(key) "
            f"WHERE e.key <> ALL(ARRAY[{known}])"
        )
    typed = [(name, json_type(f)) for name, f in fields.items() if not f.required and json_type(f)]
    if contract.wrong_type == NULL and typed:
        values = ", ".join(f"({_literal(name)}, {_literal(kind)})" for name, kind in typed)
        parts.append(
            "SELECT a.k, 'nulled_values' AS kind, f.name AS field "
            f"FROM a CROSS JOIN (VALUES {values}) AS f(name, kind) "
            "WHERE jsonb_typeof(a.payload -> f.name) NOT IN (f.kind, 'null')"
        )
    return " UNION ALL ".join(parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The usual shapes of a timestamp (``2026-08-07T23:19:00-08:00``, ``…Z``, naive, with milli- or
# microseconds), every digit written 9, and whether they have an offset: _TIMESTAMP_RE matches each.
_COMMON_SHAPES = tuple(
    (f"9999-99-99T99:99:99{fraction}{offset}", bool(offset))
    for fraction in ("", ".999", ".999999")
    for offset in ("+99:99", "-99:99", "Z", "")
)
# Once a text matched _TIMESTAMP_RE it has an offset exactly when it ends with Z or z, or holds a
# "+" or a third "-" (the date holds two, the time none): what its offset group says, for a fraction
# of a regular expression's CPU.
_OFFSET_LIKE = ("%Z", "%z", "%+%", "%-%-%-%")
_SPACE = r"E' \t\n\r\f\v'"


def _timestamp(text: str) -> str:
    """SQL: the payload text ``text`` as timestamptz (naive means UTC, as the schema reads it),
    or null when it is no timestamp the schema accepts. Pass a column, or an expression cheap to
    compute again: it is read several times.

    A text of one of :data:`_COMMON_SHAPES` (its digits' places compared, with one ``translate``)
    is cast at once. Any other is trimmed and checked with :data:`_TIMESTAMP_RE`, its offset
    read with :data:`_OFFSET_LIKE`; the regular expression is most of the CPU of a conversion."""
    whens = " ".join(f"WHEN {_literal(shape)} THEN {_common(text, shape, offset)}" for shape, offset in _COMMON_SHAPES)
    trimmed = f"btrim({text}, {_SPACE})"
    offset = " OR ".join(f"{trimmed} LIKE '{pattern}'" for pattern in _OFFSET_LIKE)
    return (
        f"CASE translate({text}, '0123456789', '9999999999') {whens} "
        f"ELSE CASE WHEN {trimmed} ~ '{_TIMESTAMP_RE}' THEN CASE WHEN {offset} "
        f"THEN {_cast(trimmed, True)} ELSE {_cast(trimmed, False)} END END END"
    )


def _common(text: str, shape: str, offset: bool) -> str:
    """SQL: ``text``, of the common ``shape``, cast; with an offset, only one PostgreSQL takes
    (hours to 15, minutes to 59: the schemas refuse others, but a payload stored before they did
    may hold one, and its cast would fail the whole measure), else null."""
    if not offset or shape.endswith("Z"):
        return _cast(text, offset)
    hours = len(shape) - 4  # "+HH:MM" ends the shape
    in_range = f"substr({text}, {hours}, 2) <= '15' AND substr({text}, {hours + 3}, 2) <= '59'"
    return f"CASE WHEN {in_range} THEN {_cast(text, True)} END"


def _cast(text: str, offset: bool) -> str:
    return f"CAST({text} AS timestamptz)" if offset else f"CAST({text} AS timestamp) AT TIME ZONE 'UTC'"


def _level(score: str) -> str:
    whens = " ".join(f"WHEN {score} >= {low} THEN '{name}'" for name, low in LEVELS)
    return f"CASE {whens} ELSE '{UNUSABLE}' END"


def _share(count: str) -> str:
    return f"CAST({count} AS numeric) / m.accepted"


def _round(value: str) -> str:
    return f"CAST(round({value}, 4) AS double precision)"


# The groups of a measure by ingestion (the settler, the quality recompute job): ``:ids``, ingestions
# of type ``:t``. An ingestion's records are all of its type, so the raw filter names no type: with
# ``r.record_type = :t`` beside it, a plan made without statistics (autovacuum off, or a table just
# loaded) ANDed the ingestions' index entries with every entry of the type in the
# (record_type, natural_key, …) index, a read that grows with the table, about 10 µs of PostgreSQL
# a record at 100,000 records of the type.
BY_INGESTIONS = {
    "raw_group": "r.ingestion_id",
    "raw_filter": "r.ingestion_id = ANY(:ids)",
    "ing_group": "i.id",
    "ing_filter": "i.id = ANY(:ids)",
}


# A validation dead letter's error is "<field>: <message>" parts joined by "; "
# (etl_app.pipeline.validate.format_field_errors): split only where "; " is followed by the next
# "<field>: ", so that a message holding "; " stays whole; a part with no ": " counts under _schema
# (the schema's own errors) with the whole part as its message.
_ERROR_PARTS = "'; (?=[^;: ]+: )'"


def quality_select(record_type: RecordType, *, raw_group: str, raw_filter: str, ing_group: str, ing_filter: str) -> str:
    """The SELECT measuring ``record_type``'s records in groups: ``raw_group``/``raw_filter`` over
    ``raw_records r``, ``ing_group``/``ing_filter`` over ``ingestions i`` (SQL text; the
    caller binds their parameters, and ``:t`` to the type's name). ``raw_filter`` selects records
    of the type only (it tests ``r.record_type = :t`` unless its other terms imply it, as
    :data:`BY_INGESTIONS`' do). Rows: ``k`` and :data:`METRIC_COLUMNS`. Groups with neither an
    accepted nor a rejected record are absent."""
    fields = quality_fields(record_type)
    time_field = record_type.time_field
    names = [name for name, _ in fields]
    # Each text of a payload is read once (e.t_<i>, e.event_text, e.own_text) and tested where needed.
    texts = "".join(f", r.payload ->> {_literal(name)} AS t_{i}" for i, name in enumerate(names))
    texts += f", r.payload ->> {_literal('event_time')} AS event_text"
    if time_field in names:
        own_text = f"e.t_{names.index(time_field)}"
    elif time_field:
        texts += f", r.payload ->> {_literal(time_field)} AS own_text"
        own_text = "e.own_text"
    event_time = _timestamp("e.event_text")
    if time_field:
        event_time = f"coalesce({event_time}, {_timestamp(own_text)})"
    flags = "".join(
        f",\n                   {_present(record_type, name, f'e.t_{i}', 'e.payload')} AS p_{i}"
        for i, name in enumerate(names)
    )
    counts = "".join(f",\n               count(*) FILTER (WHERE a.p_{i}) AS c_{i}" for i in range(len(names)))
    accepted = f"FROM raw_records r WHERE r.status <> :REJECTED AND {raw_filter}"
    pairs = [f"{_literal(name)}, round({_share(f'm.c_{i}')}, 4)" for i, (name, _) in enumerate(fields)]
    # jsonb_build_object takes at most 100 arguments: 40 fields an object, joined with ||
    shares = " || ".join(f"jsonb_build_object({', '.join(pairs[n : n + 40])})" for n in range(0, len(pairs), 40))
    shares = shares or "CAST('{}' AS jsonb)"
    wanted = {e.field for e in record_type.expected_fields}
    expected = [_share(f"m.c_{i}") for i, (name, _) in enumerate(fields) if name in wanted]
    overall = f"({' + '.join(expected)}) / {len(expected)}" if expected else "CAST(NULL AS numeric)"
    parented = bool(record_type.parents)
    integrity = _share("m.accepted - m.orphans") if parented else "1"
    parts = ["v.validity", "v.uniqueness", "v.integrity"] + (["v.overall"] if expected else [])
    score = f"round(({' + '.join(parts)}) / {len(parts)}, 4)"
    set_aside = _set_aside(record_type)
    if set_aside:
        aside_cte = f""", a AS (
        SELECT {raw_group} AS k, r.payload {accepted}
    ), aside AS (
        SELECT k, kind, sum(n) AS total, jsonb_object_agg(field, n) AS fields
        FROM (SELECT k, kind, field, count(*) AS n FROM ({set_aside}) x GROUP BY k, kind, field) per_field
        GROUP BY k, kind
    )"""
        aside_columns = ", ".join(
            f"coalesce((SELECT jsonb_build_object('total', CAST(x.total AS integer), 'fields', x.fields) "
            f"FROM aside x WHERE x.k = s.k AND x.kind = '{name}'), {_NONE_SET_ASIDE}) AS {name}"
            for name in SET_ASIDE_COLUMNS
        )
    else:
        aside_cte = ""
        aside_columns = ", ".join(f"{_NONE_SET_ASIDE} AS {name}" for name in SET_ASIDE_COLUMNS)
    # The accepted records are read once, each value of a payload once: the inner select (e) takes
    # the texts of the fields and of the event time, the middle one (a) tests each field's presence
    # and converts the event time to the lag. OFFSET 0 keeps each of them from being merged into
    # the select above, where every expression would be computed again for each place naming it;
    # and the aggregate sorts these narrow rows (flags and the lag), not the payloads. The dead
    # letters' errors are read from the group's dead records, by the index on raw_record_id; so is
    # an orphan's dead letter (a record has one at most): as an EXISTS, it was planned as a hash of
    # every missing_parent and parent_mismatch dead letter, built on each measure with a dead record.
    return f"""
    WITH m AS (
        SELECT a.k, count(*) AS accepted, count(DISTINCT a.natural_key COLLATE "C") AS keys,
               count(*) FILTER (WHERE a.status = :DEAD AND (
                   SELECT d.error_type FROM dead_letters d WHERE d.raw_record_id = a.id
                   ) IN (:MISSING_PARENT, :PARENT_MISMATCH)) AS orphans,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY a.lag) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY a.lag) AS p95,
               max(a.lag) AS lag_max,
               count(*) FILTER (WHERE a.dropped) AS dropped{counts}
        FROM (
            SELECT e.k, e.id, e.natural_key, e.status, e.payload IS NULL AS dropped,
                   EXTRACT(EPOCH FROM e.received_at - {event_time}) AS lag{flags}
            FROM (
                SELECT {raw_group} AS k, r.id, r.natural_key, r.status, r.received_at, r.payload{texts}
                {accepted}
                OFFSET 0
            ) e
            OFFSET 0
        ) a
        GROUP BY a.k
    ), refused AS (
        SELECT {ing_group} AS k, i.rejected AS n FROM ingestions i
        WHERE i.record_type = :t AND i.rejected > 0 AND {ing_filter}
        UNION ALL
        SELECT {raw_group}, 1 FROM raw_records r WHERE r.status = :REJECTED AND {raw_filter}
    ), rej AS (
        SELECT k, sum(n) AS rejected FROM refused GROUP BY k
    ), errs AS (
        SELECT {ing_group} AS k, e.key AS field, msg.value AS message
        FROM ingestions i JOIN rejections x ON x.ingestion_id = i.id
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(x.errors) = 'object'
                                           THEN x.errors ELSE '{{}}' END) AS e
        CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(e.value) = 'array'
                                                          THEN e.value ELSE '[]' END) AS msg(value)
        WHERE i.record_type = :t AND i.rejected > 0 AND {ing_filter}
        UNION ALL
        SELECT {raw_group},
               CASE WHEN strpos(p.part, ': ') > 0 THEN split_part(p.part, ': ', 1) ELSE '_schema' END,
               CASE WHEN strpos(p.part, ': ') > 0 THEN substr(p.part, strpos(p.part, ': ') + 2) ELSE p.part END
        FROM raw_records r
        CROSS JOIN LATERAL (SELECT d.error FROM dead_letters d WHERE d.raw_record_id = r.id
                            AND d.error_type = :VALIDATION OFFSET 0) AS d
        CROSS JOIN LATERAL regexp_split_to_table(d.error, {_ERROR_PARTS}) AS p(part)
        WHERE r.status = :DEAD AND {raw_filter}
    ), top AS (
        SELECT k, jsonb_agg(jsonb_build_object('field', field, 'message', message, 'count', n)
                            ORDER BY n DESC, field, message) AS top_errors
        FROM (SELECT k, field, message, count(*) AS n,
                     row_number() OVER (PARTITION BY k ORDER BY count(*) DESC, field, message) AS rank
              FROM errs GROUP BY k, field, message) ranked
        WHERE rank <= {TOP_ERRORS}
        GROUP BY k
    ), v AS (
        SELECT g.k, coalesce(m.accepted, 0) AS accepted, coalesce(rej.rejected, 0) AS rejected,
               CAST(coalesce(m.accepted, 0) AS numeric) / (coalesce(m.accepted, 0) + coalesce(rej.rejected, 0))
                   AS validity,
               {_share("m.keys")} AS uniqueness,
               {integrity} AS integrity,
               {overall} AS overall,
               CASE WHEN m.accepted > 0 THEN {shares} END AS completeness,
               m.p50, m.p95, m.lag_max, coalesce(m.dropped, 0) AS dropped, top.top_errors
        FROM (SELECT k FROM m UNION SELECT k FROM rej) g
        LEFT JOIN m ON m.k = g.k LEFT JOIN rej ON rej.k = g.k LEFT JOIN top ON top.k = g.k
    ), s AS (
        SELECT v.*, CASE WHEN v.accepted > 0 THEN {score} END AS score FROM v
    ){aside_cte}
    SELECT s.k, CAST(s.dropped AS integer) AS payloads_dropped,
           CAST(s.accepted + s.rejected AS integer) AS received,
           CAST(s.accepted AS integer) AS accepted,
           CAST(s.rejected AS integer) AS rejected,
           {_round("s.validity")} AS validity,
           CASE WHEN s.accepted > 0 THEN s.completeness || jsonb_build_object('overall', round(s.overall, 4)) END
               AS completeness,
           CASE WHEN s.accepted > 0 THEN {_round("s.uniqueness")} END AS uniqueness,
           CASE WHEN s.accepted > 0 THEN {_round("s.integrity")} END AS integrity,
           {_round("CAST(s.p50 AS numeric)")} AS timeliness_p50,
           {_round("CAST(s.p95 AS numeric)")} AS timeliness_p95,
           {_round("s.lag_max")} AS timeliness_max,
           CAST(s.score AS double precision) AS score,
           {_level("s.score")} AS level,
           coalesce(s.top_errors, '[]') AS top_errors,
           {aside_columns}
    FROM s
    """


def as_report(row: dict) -> dict:
    """A measured row as the API shows it: timeliness as one object (null when no record has an
    event time)."""
    out = {name: row[name] for name in METRIC_COLUMNS if not name.startswith("timeliness_")}
    p50, p95, most = row["timeliness_p50"], row["timeliness_p95"], row["timeliness_max"]
    out["timeliness"] = None if p50 is None else {"p50": p50, "p95": p95, "max": most}
    out.update({name: row[name] for name in SET_ASIDE_COLUMNS if name in row})
    return out
