"""``GET /api/v1/ingestions/{id}/rejections``: the records an ingestion refused, with their errors.

JSON (default): ``{rejections: [...], next, limit, not_stored}``, in the order of the input;
each item is ``{index, row, natural_key, raw, raw_truncated, raw_size, errors, created_at}``
where ``index`` is the place in an API batch (from 0) and ``row`` the row of an uploaded file,
the other one null; ``raw`` is the values as received (a line that was not JSON is kept as its
text), cut when larger than ETL_REJECTION_RAW_BYTES (``raw_truncated``, with ``raw_size`` the
length of their JSON as received) and ``errors`` is ``{field: [message]}``. ``not_stored``: the
rejections past ETL_MAX_REJECTIONS_STORED, counted only. ``limit`` 1..500 (default 50);
``cursor`` is the ``next`` of the previous page (null on the last).

``?format=csv`` streams every rejection (from ``cursor`` on, at most ``limit`` when given) as a
CSV to fix in a spreadsheet and upload again: one column per input field of the type's schema,
holding the values as received (a list as its items joined with ``;``, an object as JSON,
true/false for booleans, empty for null or absent), then ``_raw``, ``_row`` and ``_errors``
(``field: message; ...``), whose names start with ``_`` so that the upload parser drops them.
``_raw`` is empty unless the values cannot be spread over the columns: a value that is not an
object (a bad NDJSON line: its text) or an object with fields the schema does not have (those
fields, as JSON; the others are in their columns). ``_row`` is the row of the file, or the
index in the batch; ``_truncated`` is ``true`` when the values were cut when stored. Every
cell is quoted, and one starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
(and not a number) gets a ``'`` in front, so that a spreadsheet does not run it as a formula;
the upload parser takes that quote off again. The ``X-Rejections-Not-Stored`` header counts the
rejections that were not stored.

``?format=xlsx``: the same rows and columns as a workbook whose every cell is text (number
format ``@``): no ``'`` is added, nothing is read as a formula or a number.
"""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, validate

from etl_app.api.bodies import Int, RejectionPage, Uuid, one_of
from etl_app.api.common import bad_parameter, query_parameters
from etl_app.api.spec import operation, reply
from etl_app.dead_letters.errors import InvalidParameter
from etl_app.dead_letters.filters import parse_int
from etl_app.web.context import current_runtime
from etl_app.web.rejections import PAGE, XLSX_MIMETYPE, download_response, ingestion_or_404, rejection_item

bp = Blueprint("rejections", __name__, url_prefix="/api/v1")

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_CURSOR = 2**63 - 1
FORMATS = ("json", "csv", "xlsx")
PARAMETERS = ("limit", "cursor", "format")


class RejectionsQuery(Schema):
    limit = Int(validate=validate.Range(1, MAX_LIMIT), load_default=DEFAULT_LIMIT)
    cursor = Int(validate=validate.Range(1, MAX_CURSOR))
    format = one_of(FORMATS, load_default="json")


@bp.get("/ingestions/<ingestion_id>/rejections")
@operation(
    summary="The records an ingestion refused, with their values and errors, in input order; pass `next` back "
    "as `cursor` for the next page, or `format=csv` (`format=xlsx`) for all of them as a CSV (a workbook) to "
    "correct and upload again",
    description="Values larger than ETL_REJECTION_RAW_BYTES are stored cut (`raw_truncated`, `raw_size`); past "
    "ETL_MAX_REJECTIONS_STORED rejections an ingestion's others are only counted (`not_stored`). "
    "CSV: one column per input field of the type (a list joined with `;`, an object as JSON), then "
    "`_raw` (the values when they fit no column: a line that was not JSON, or fields the schema does not have), "
    "`_row` (the file row or batch index), `_errors` (`field: message; ...`) and `_truncated` (`true` when the "
    "values were cut). Every cell is quoted; one that starts with `=`, `+`, `-`, `@`, a tab or a carriage "
    "return and is not a number gets a `'` in front (a spreadsheet would run it as a formula), which the upload "
    "parser takes off. XLSX: the same rows, every cell text (number format `@`), nothing added. The "
    "`X-Rejections-Not-Stored` header of both counts the rejections not stored. With `format=csv` or `xlsx`, "
    "`cursor` and `limit` are optional: without them the file holds every stored rejection.",
    tags=["ingestions"],
    path={"ingestion_id": Uuid()},
    query=RejectionsQuery,
    responses={
        200: (
            "one page (JSON), or every rejection (CSV or XLSX, as an attachment)",
            {
                "application/json": RejectionPage,
                "text/csv": {"type": "string"},
                XLSX_MIMETYPE: {"type": "string", "format": "binary"},
            },
        ),
        400: "a bad query parameter",
        404: "no such ingestion",
    },
)
def list_rejections(ingestion_id: str):
    params = query_parameters(PARAMETERS)
    fmt = params.get("format", "json")
    if fmt not in FORMATS:
        raise bad_parameter("format", f"must be one of {', '.join(FORMATS)}")
    try:
        # A file holds every rejection from ``cursor`` on, or ``limit`` of them when given.
        limit = parse_int(params, "limit", DEFAULT_LIMIT if fmt == "json" else None, 1, MAX_LIMIT)
        cursor = parse_int(params, "cursor", None, 1, MAX_CURSOR)
    except InvalidParameter as exc:
        raise bad_parameter(exc.name, "must be an integer in range") from None
    ident, ingestion = ingestion_or_404(ingestion_id)
    if fmt != "json":
        return download_response(ident, ingestion, cursor or 0, limit, fmt)
    with current_runtime().engine.connect() as conn:
        rows = conn.execute(PAGE, {"id": ident, "from": cursor or 0, "n": limit + 1}).all()
    items = [rejection_item(row, upload=ingestion.upload) for row in rows[:limit]]
    following = rows[limit - 1].position + 1 if len(rows) > limit else None
    page = {"rejections": items, "next": following, "limit": limit, "not_stored": ingestion.rejections_not_stored}
    return reply(RejectionPage, page)


# -- CSV ----------------------------------------------------------------------------------------
