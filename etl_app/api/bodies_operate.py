"""The operators' JSON bodies as marshmallow schemas (see :mod:`etl_app.api.bodies`): dead
letters and their groups, jobs, lookup providers, the audit trail."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from etl_app import audit
from etl_app.api.bodies import (
    Any_,
    Day,
    Flag,
    Int,
    Moment,
    Num,
    Obj,
    SupersededBy,
    Text,
    Uuid,
    described,
    many,
    nested,
    nullable,
    one_of,
)
from etl_app.errors import ERROR_TYPES
from etl_app.lookups.metrics import BREAKER_STATES
from etl_app.lookups.registry import CALL_OUTCOMES
from etl_app.models import AUDIT_OUTCOMES, DEAD_LETTER_STATUSES, JOB_RUN_STATUSES, JOB_TRIGGERS, OUTCOMES, STATUSES

# -- dead letters (etl_app.api.dead_letters) ----------------------------------------------------


class DeadLetterSummary(Schema):
    id = Int()
    raw_record_id = Int()
    ingestion_id = Uuid()
    record_type = Text()
    natural_key = nullable(Text)
    error_type = one_of(ERROR_TYPES)
    error = Text()
    task_name = nullable(Text)
    attempts = Int()
    status = one_of(DEAD_LETTER_STATUSES)
    replay_count = Int()
    first_failed_at = Moment()
    last_failed_at = Moment()
    last_replayed_at = nullable(Moment)
    last_outcome = one_of(OUTCOMES, allow_none=True, **described("what became of the latest replay"))
    superseded_by = nested(
        SupersededBy,
        allow_none=True,
        **described(
            "status superseded: the replayed record settled without landing, because this later record of its "
            "key is stored (raw_record_id is null for a row stored before tables carried it)"
        ),
    )
    record_status = one_of(STATUSES, **described("its raw record's status now"))


class Edit(Schema):
    at = Moment()
    key_id = Text()
    original = Any_(**described("the dead letter's payload before the edit"))
    edited = Any_(**described("the payload replayed"))


class DeadLetter(DeadLetterSummary):
    payload = Any_(**described("the payload that failed"))
    traceback = nullable(Text)
    traceback_truncated = Flag()
    edits = many(
        Edit,
        **described(
            "its replays with a corrected payload, oldest first: the payload as it was, as corrected, "
            "and the key id that did it"
        ),
    )


class DeadLetterPage(Schema):
    dead_letters = many(DeadLetterSummary)
    next = nullable(Text, **described("the cursor of the next page; null on the last"))
    limit = Int()


class Replayed(Schema):
    replayed = Int()
    dead_letter_id = Int()
    raw_record_id = Int()


class Discarded(Schema):
    dead_letter_id = Int()
    status = one_of(DEAD_LETTER_STATUSES)
    record_status = one_of(STATUSES)


class BulkReplayed(Schema):
    replayed = Int()
    remaining = Int(**described("matching dead letters still open"))


class BulkDryRun(Schema):
    dry_run = Flag()
    would_replay = Int()
    remaining = Int()


# -- dead-letter groups (etl_app.api.dead_letter_groups) ----------------------------------------

GROUP_ID = "^[0-9a-f]{16}$"


class GroupId(Schema):
    id = Text(validate=validate.Regexp(GROUP_ID))
    record_type = Text()
    error_type = one_of(ERROR_TYPES)
    cause = Text(
        **described("the error message with ids, numbers, moments and quoted values as <n>, <id>, <ts>, '<v>'")
    )


class Sample(Schema):
    id = Int()
    payload = Any_(**described("its payload"))
    error = Text()


class Arrivals(Schema):
    unit = one_of(["hour"])
    from_ = Moment(data_key="from", attribute="from")
    counts = fields.List(Int(), validate=validate.Length(24, 24))


class DeadLetterGroup(GroupId):
    count = Int()
    first_seen = Moment()
    last_seen = Moment()
    sample = nested(Sample, **described("the group's newest dead letter"))
    arrivals = nested(
        Arrivals,
        **described(
            "dead letters of the group by the hour of their last failure, the last 24 hours "
            "(`from` is the start of the first hour; the current hour last)"
        ),
    )


class GroupPage(Schema):
    groups = many(DeadLetterGroup)
    next = nullable(Text)
    limit = Int()


class GroupAction(Schema):
    group = nested(GroupId)
    dry_run = Flag()
    count = Int(**described("dead letters acted on (with dry_run: it would act on)"))
    remaining = Int(**described("open dead letters of the group left after it"))


class GroupReplayed(GroupAction):
    replayed = Int()


class GroupDiscarded(GroupAction):
    discarded = Int()


# -- jobs (etl_app.api.jobs) --------------------------------------------------------------------


class Window(Schema):
    from_ = Day(data_key="from", attribute="from")
    to = Day()


class JobRun(Schema):
    id = Int()
    window = nested(Window)
    trigger = one_of(JOB_TRIGGERS)
    status = one_of(JOB_RUN_STATUSES)
    task_id = nullable(Text)
    started_at = Moment()
    finished_at = nullable(Moment)
    rows = nullable(Int, **described("rows the run touched"))
    error = nullable(Text, **described("why it failed, or which run held the lock"))


class Job(Schema):
    name = Text()
    task = Text()
    description = Text()
    schedule = Text(**described("crontab 'm h dom mon dow' (UTC), 'every N s', or 'by hand' (beat never runs it)"))
    schedule_variable = nullable(Text, **described("the setting that changes the schedule; null for a job run by hand"))
    takes_window = Flag()
    default_window = nested(Window)
    records = Text()
    last_run = nested(JobRun, allow_none=True)
    recent_runs = many(JobRun)


class Jobs(Schema):
    jobs = many(Job)


class JobQueued(Schema):
    job = Text()
    task_id = Text()
    window = nested(Window, allow_none=True)
    status = Text()


# -- lookup providers (etl_app.api.providers) ---------------------------------------------------


def _count(**kwargs) -> Int:
    return Int(required=True, validate=validate.Range(min=0), **kwargs)


Calls = Schema.from_dict({name: _count() for name in (*CALL_OUTCOMES, "total")}, name="Calls")


class CacheCounts(Schema):
    hit = _count()
    miss = _count()
    hit_ratio = Num(required=True, allow_none=True, validate=validate.Range(0, 1))


class Breaker(Schema):
    state = one_of(BREAKER_STATES, required=True)
    open_for_seconds = Num(required=True, validate=validate.Range(min=0))
    failures = _count()
    opened_count = _count()


class Provider(Schema):
    name = Text(required=True)
    enabled = Flag(required=True)
    host = Text(required=True, allow_none=True, **described("the base URL's host[:port]; null when off"))
    rate = Text(required=True, allow_none=True, **described("limits' notation, e.g. 10/second; null: none"))
    ttl_seconds = _count()
    calls = nested(Calls, required=True)
    cache = nested(CacheCounts, required=True)
    errors = Obj(
        required=True,
        keys=Text(),
        values=Int(validate=validate.Range(min=0)),
        **described("failed lookups by kind (timeout, connect, ...)"),
    )
    rate_limited = _count(**described("429 answers"))
    breaker = nested(Breaker, required=True)


class Providers(Schema):
    providers = fields.List(fields.Nested(Provider), required=True)


# -- the audit trail (etl_app.api.audit) --------------------------------------------------------


class AuditEntry(Schema):
    id = Int()
    at = Moment()
    key_id = Text()
    action = one_of(audit.ACTIONS)
    target = Obj()
    count = nullable(Int)
    outcome = one_of(AUDIT_OUTCOMES)
    message = nullable(Text)
    request_id = nullable(Text)
    occurrences = Int(
        **described("how many times it happened: refusals of a key and action are counted in one entry a minute")
    )
    first_at = Moment(**described("the first time (``at`` is the last)"))


class AuditPage(Schema):
    audit = many(AuditEntry)
    next = nullable(Int)
    limit = Int()


# -- records waiting for their parents (etl_app.api.waiting) --------------------------------------


class WaitingGroup(Schema):
    ingestion_id = Uuid(required=True)
    record_type = Text(required=True)
    waiting = Int(required=True, **described("records of this ingestion and type waiting for a parent"))
    parents = Int(required=True, **described("distinct parents they wait for"))
    waiting_since = Moment(required=True, allow_none=True, **described("when the longest waiting one began"))


class WaitingList(Schema):
    total = Int(required=True, **described("records waiting for a parent"))
    groups = many(WaitingGroup, required=True)
    more = Flag(required=True, **described("more groups than the 500 listed"))


class GivenUp(Schema):
    given_up = Int(required=True, **described("records dead-lettered as missing_parent now"))
    remaining = Int(required=True, **described("matching records still waiting (past the 10,000 of a call)"))
