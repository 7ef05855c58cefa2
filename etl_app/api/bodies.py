"""The JSON bodies the API answers with, as marshmallow schemas: each handler dumps its answer
through one (:func:`etl_app.api.spec.reply`) and the OpenAPI document describes it from the same
schema. This module: the error body, ingest, records and their lineage, ingestions, rejections,
the jobs' reports, health; :mod:`etl_app.api.bodies_operate` the operators' bodies.

The fields here keep a value as the handler made it when dumping (the JSON provider writes
datetimes, dates and UUIDs, :mod:`etl_app.api.jsonprovider`): the schema chooses and orders the
keys and documents each value's type; it does not convert values.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, fields, validate

from etl_app.models import AUDIT_OUTCOMES, DEAD_LETTER_STATUSES, OUTCOMES, STATUSES
from etl_app.quality import LEVELS, UNUSABLE
from etl_app.record_types.contract import UNKNOWN_MODES, WRONG_TYPE_MODES
from etl_app.uploads.formats import FORMATS as UPLOAD_FORMATS


class _AsIs:
    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return value


class Int(_AsIs, fields.Integer):
    pass


class Num(_AsIs, fields.Float):
    pass


class Text(_AsIs, fields.String):
    pass


class Flag(_AsIs, fields.Boolean):
    """A JSON boolean only: marshmallow's Boolean would also load "true", "1" or 1 as true."""

    truthy = frozenset({True})
    falsy = frozenset({False})


class Moment(_AsIs, fields.DateTime):
    pass


class Day(_AsIs, fields.Date):
    pass


class Uuid(_AsIs, fields.UUID):
    pass


class Obj(_AsIs, fields.Dict):
    pass


Any_ = fields.Raw


def nullable(field: type[fields.Field], **kwargs: Any) -> fields.Field:
    return field(allow_none=True, **kwargs)


def one_of(values: Any, **kwargs: Any) -> Text:
    return Text(validate=validate.OneOf(list(values)), **kwargs)


def many(schema: type[Schema], **kwargs: Any) -> fields.List:
    return fields.List(fields.Nested(schema), **kwargs)


def nested(schema: type[Schema], **kwargs: Any) -> fields.Nested:
    return fields.Nested(schema, **kwargs)


def texts(**kwargs: Any) -> fields.List:
    return fields.List(Text(), **kwargs)


def described(text: str) -> dict[str, Any]:
    return {"metadata": {"description": text}}


class ErrorBody(Schema):
    """Every error answer (etl_app.api.errors); some carry more keys (``parameter``, ...)."""

    class Meta:
        unknown = INCLUDE

    error = Text(required=True)
    message = Text(required=True)
    errors = Any_(**described("field errors: {field: [message]} or [{index, errors}]"))


# -- ingest -------------------------------------------------------------------------------------


class IndexedErrors(Schema):
    index = Int()
    errors = Obj()


class Accepted(Schema):
    ingestion_id = Uuid()
    accepted = Int()
    rejected = Int()
    errors = many(IndexedErrors)


class StoredFile(Schema):
    filename = Text()
    format = one_of(UPLOAD_FORMATS)
    size = Int()
    note = nullable(Text)


class UploadAccepted(Schema):
    ingestion_id = Uuid()
    upload = nested(StoredFile)


# -- a record and its lineage (etl_app.lineage) -------------------------------------------------


class FileRow(Schema):
    filename = Text()
    row = nullable(Int)


FILE = {
    "allow_none": True,
    **described("the uploaded file and its row the record came from; null unless from an upload"),
}


class LineageReplay(Schema):
    at = Moment()
    key_id = Text()
    action = one_of(["replay", "edit"])
    outcome = one_of(AUDIT_OUTCOMES)
    message = nullable(Text)
    request_id = nullable(Text)


class SupersededBy(Schema):
    raw_record_id = nullable(Int)
    ingestion_id = nullable(Uuid)


class LineageDeadLetter(Schema):
    id = Int()
    error_type = Text()
    error = Text()
    status = one_of(DEAD_LETTER_STATUSES)
    attempts = Int()
    first_failed_at = Moment()
    last_failed_at = Moment()
    replay_count = Int()
    last_replayed_at = nullable(Moment)
    last_outcome = one_of(OUTCOMES, allow_none=True)
    superseded_by = nested(SupersededBy, allow_none=True)
    edited_fields = texts(
        allow_none=True, **described("fields of the current payload that differ from the one that last failed")
    )
    replays_not_listed = Int(**described("replays counted but not in `replays` (bulk, automatic)"))


class LineageEntry(Schema):
    kind = one_of(["raw_record", "rejection"])
    raw_record_id = nullable(Int)
    rejection_id = nullable(Int)
    ingestion_id = Uuid()
    source = nullable(Text)
    status = one_of(STATUSES)
    received_at = Moment()
    settled_at = nullable(Moment)
    attempts = nullable(Int)
    stored = Flag(**described("the version the table holds now"))
    file = nested(FileRow, **FILE)
    position = nullable(Int, **described("a rejection's index in its batch or row in its file"))
    errors = nullable(Obj, **described("a rejection's field errors"))
    dead_letter = nested(LineageDeadLetter, allow_none=True)
    replays = many(
        LineageReplay,
        **described("audited replays and edits of this one dead letter (bulk and automatic replays are not listed)"),
    )


class Lineage(Schema):
    ingestion_id = Uuid()
    raw_record_id = nullable(Int)
    source = nullable(
        Text, **described("api, batch, ndjson, upload; replay when the stored version landed by a replay")
    )
    ingestion_source = nullable(Text)
    source_label = nullable(Text, **described("the `source` the client gave in the record"))
    file = nested(FileRow, **FILE)
    received_at = Moment()
    enriched_at = Moment()
    persisted_at = Moment()
    attempts = nullable(Int)
    schema_version = Int()
    history = many(LineageEntry, **described("raw records and rejections of this key, oldest first; the latest 100"))
    history_truncated = Flag()


class StoredRecord(Schema):
    record_type = Text()
    key = Text()
    fields = Obj()
    derived = Obj()
    extra = Obj(
        allow_none=True,
        **described("unknown fields kept beside the record as sent (schema contract unknown=keep); else null"),
    )
    lineage = nested(Lineage)


# -- ingestions, their quality and rejections ---------------------------------------------------


class Timeliness(Schema):
    p50 = Num()
    p95 = Num()
    max = Num()


class TopError(Schema):
    field = Text()
    message = Text()
    count = Int()


class SetAside(Schema):
    total = Int(**described("fields set aside, over all accepted records"))
    fields = Obj(keys=Text(), values=Int(), **described("{field: the accepted records it was set aside in}"))


class Quality(Schema):
    """An ingestion's or a day's quality (etl_app.quality.as_report); null shares when nothing was accepted."""

    received = Int(**described("every record sent: accepted + rejected (the base of validity)"))
    accepted = Int()
    rejected = Int()
    validity = Num()
    completeness = Obj(
        keys=Text(),
        values=nullable(Num),
        allow_none=True,
        **described(
            "{field: share} for every input field, in the schema's order, and overall: the mean of the shares "
            "of the type's expected fields (GET /api/v1/record-types), null when it has none"
        ),
    )
    uniqueness = nullable(Num)
    integrity = nullable(Num)
    timeliness = nested(Timeliness, allow_none=True, **described("seconds from event time to receipt"))
    score = nullable(Num, **described("mean of validity, completeness.overall, uniqueness, integrity: those not null"))
    level = one_of([*(name for name, _ in LEVELS), UNUSABLE])
    top_errors = many(TopError)
    dropped_fields = nested(
        SetAside,
        **described("unknown fields the type's schema contract dropped (unknown=drop); an ingestion's only"),
    )
    nulled_values = nested(
        SetAside,
        **described("wrong-typed optional values taken as null (schema contract wrong_type=null); an ingestion's only"),
    )


class IngestionCounts(Schema):
    received = Int(
        **described(
            "the records accepted and stored (in flight, persisted or dead); not quality.received, "
            "which adds the rejected"
        )
    )
    persisted = Int()
    dead = Int()
    rejected = Int()
    rejections_not_stored = Int(
        **described("of the rejected, the ones past ETL_MAX_REJECTIONS_STORED: counted, not stored")
    )
    in_flight = Int()


class UploadProgress(Schema):
    filename = Text()
    format = Text()
    note = nullable(Text)
    size = Int()
    status = one_of(["stored", "parsing", "parsed", "failed"])
    rows_read = Int()
    progress = Num()
    error = nullable(Text)


class Ingestion(Schema):
    id = Uuid()
    record_type = Text()
    source = Text()
    status = one_of(["running", "finished", "failed"])
    counts = nested(IngestionCounts)
    quality = nested(Quality, allow_none=True, **described("quality.md; null while running"))
    created_at = Moment()
    finished_at = nullable(Moment)
    upload = nested(UploadProgress, allow_none=True, **described("null unless the ingestion is an upload"))


class IngestionPage(Schema):
    ingestions = many(Ingestion, **described("newest first, each as GET /api/v1/ingestions/{id} shows it"))
    next = nullable(Text, **described("the cursor of the next (older) page; null on the last"))
    limit = Int()


class Rejection(Schema):
    index = nullable(Int, **described("the place in an API batch, from 0 (null for an upload)"))
    row = nullable(Int, **described("the row of the uploaded file (null for an API ingestion)"))
    natural_key = nullable(Text)
    raw = Any_(
        allow_none=True,
        **described(
            "the values as received (a line that was not JSON: its text), their long texts cut (ending with …) "
            "when they were larger than ETL_REJECTION_RAW_BYTES"
        ),
    )
    raw_truncated = Flag(**described("true when raw was cut when stored"))
    raw_size = nullable(Int, **described("when raw_truncated, the length of the values' JSON as received"))
    errors = Obj(keys=Text(), values=texts(), **described("{field: [message]}"))
    created_at = Moment()


class RejectionPage(Schema):
    rejections = many(Rejection)
    next = nullable(Int)
    limit = Int()
    not_stored = Int(
        **described("rejections of the ingestion past ETL_MAX_REJECTIONS_STORED: counted, not stored, not listed")
    )


class Parent(Schema):
    field = Text()
    record_type = Text()


class FieldInfo(Schema):
    name = Text()
    type = Text()
    required = Flag()
    expected = Flag(
        **described("an optional field its data owners want filled: quality's completeness.overall averages these")
    )


class Endpoints(Schema):
    single = Text()
    batch = Text()


class Contract(Schema):
    """A record type's schema contract in force (its declaration, or ETL_SCHEMA_CONTRACT)."""

    unknown = one_of(UNKNOWN_MODES, **described("what an unknown field does to a record"))
    wrong_type = one_of(WRONG_TYPE_MODES, **described("what a wrong-typed optional value does"))


class RecordTypeInfo(Schema):
    name = Text()
    key = Text()
    description = Text()
    schema_version = Int()
    parents = many(Parent)
    fields = many(FieldInfo)
    derived_fields = texts()
    contract = nested(Contract)
    endpoints = nested(Endpoints)


class RecordTypes(Schema):
    record_types = many(RecordTypeInfo)


# -- what the jobs computed (etl_app.api.reports) -----------------------------------------------


class QualityDay(Quality):
    day = Day()


class QualityDays(Schema):
    record_type = Text()
    from_ = Day(data_key="from", attribute="from")
    to = Day()
    days = many(QualityDay, **described("one entry per day with data, oldest first"))


class TutorDay(Schema):
    day = Day()
    sessions = Int()
    completed = Int()
    no_shows = Int()
    late_starts = Int()
    tutor_reschedules = Int()
    technical_issues = Int()
    feedback_count = Int()
    avg_engagement = nullable(Num)
    avg_rating = nullable(Num)


class TutorDays(Schema):
    tutor_id = Text()
    from_ = Day(data_key="from", attribute="from")
    to = Day()
    days = many(TutorDay, **described("one entry per day with sessions, oldest first"))


# -- health -------------------------------------------------------------------------------------


class Health(Schema):
    status = Text()


class BacklogState(Schema):
    """The backlog of records received and not settled yet (etl_app.ingest.backlog), as this web
    process last read it (at most a second or so ago)."""

    full = Flag(**described("submits and uploads are refused with 429 backlog_full"))
    reasons = texts(**described("why it is full: records (too many), age (one waits too long)"))
    message = Text()
    records = Int(**described("unsettled records, counted up to the bound and what 5 minutes of draining settles"))
    oldest_seconds = nullable(Num, **described("how long the oldest record counted has waited"))
    settled_per_second = nullable(Num, **described("records settled per second over the last minute"))
    max_records = Int(**described("ETL_BACKLOG_MAX_RECORDS (0: off)"))
    max_age_seconds = Int(**described("ETL_BACKLOG_MAX_AGE_SECONDS (0: off)"))
    retry_after = nullable(Int, **described("the Retry-After a submit is told now (null: not full)"))


class Ready(Schema):
    status = one_of(["ready", "not_ready"])
    checks = Obj(
        keys=Text(),
        values=Text(),
        **described(
            "{database, broker, cache}: ok, or unavailable: <error>. The status is not_ready when the database "
            "or the broker is; the cache Redis down leaves it ready (records are still taken and processed)"
        ),
    )
    backlog = nested(
        BacklogState,
        allow_none=True,
        **described(
            "null when both bounds are off (or not read lately); a full backlog leaves the service ready: it "
            "answers reads, and submits with 429 until the workers have caught up"
        ),
    )
