"""Names shared by what sends messages and what consumes them: the queues and the task names.

``celeryconfig.py`` imports nothing of the project, so its routes and beat schedule spell these
names again; a test checks that every task named there is registered.
"""

PIPELINE_QUEUE = "etl"
DEAD_LETTER_QUEUE = "dead_letter"
# Scheduled jobs have a queue of their own: behind a long pipeline queue they would wait (and
# expire) with the records they are meant to rescue.
JOBS_QUEUE = "jobs"
# The enrich stage of a record type that asks an external service (``RecordType.lookups``) runs
# on a queue and worker of its own: a provider that hangs holds those worker processes only,
# while every other chain (and the lookup type's validate and persist) goes on at full speed.
LOOKUPS_QUEUE = "lookups"
# The slices of an uploaded file are read on a queue of their own: a file's next slice is not
# queued behind the chains of the slices before it, and a long file does not hold back the
# chains of API batches (the worker consumes it: docs/deployment.md, "Uploads and the worker's pool").
UPLOADS_QUEUE = "uploads"
# every queue, in the order the queue depths show them (celeryconfig's QUEUE_NAMES spells them again)
QUEUES = (PIPELINE_QUEUE, LOOKUPS_QUEUE, UPLOADS_QUEUE, JOBS_QUEUE, DEAD_LETTER_QUEUE)

VALIDATE = "etl.validate"
ENRICH = "etl.enrich"
PERSIST = "etl.persist"
PIPELINE_TASKS = (VALIDATE, ENRICH, PERSIST)
DEAD_LETTER = "etl.dead_letter.record"
SWEEP_OUTBOX = "etl.beat.outbox-sweeper"
# The sweeper's task name before every job task read ``etl.beat.<job name>``: still registered,
# so that a message queued (or a beat schedule written) under it runs.
SWEEP_OUTBOX_FORMER = "etl.beat.sweep_outbox"
# An uploaded file is read in slices, each a call of this task that sends the next (uploads queue;
# a parse message still waiting on the etl queue, sent before that queue existed, runs there).
PARSE_UPLOAD = "etl.upload.parse"

# The scheduled jobs' tasks: ``etl.beat.<job name>`` (etl_app/jobs/registry.py).
RE_ENRICH = "etl.beat.re-enrich"
LOOKUP_REFRESH = "etl.beat.lookup-refresh"
DAILY_QUALITY = "etl.beat.daily-quality"
TUTOR_ROLLUPS = "etl.beat.tutor-rollups"
RETENTION = "etl.beat.retention"
QUALITY_RECOMPUTE = "etl.beat.quality-recompute"  # not scheduled: run by hand, sent by the API's run-now
JOB_TASKS = (RE_ENRICH, DAILY_QUALITY, TUTOR_ROLLUPS, RETENTION, LOOKUP_REFRESH, QUALITY_RECOMPUTE)
