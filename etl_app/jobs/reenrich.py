"""re-enrich: the tutors' time-dependent derived fields, recomputed as of the run's time.

A tutor's ``tenure_days``, ``is_new_tutor``, ``experience_level`` and ``is_active_today`` were
derived as of its ``received_at`` (docs/record-types.md), so they age. This job recomputes them as of
``ctx.now`` with the rules of :func:`etl_app.record_types.tutors.derive`, spelled in SQL: one
``UPDATE ... FROM`` a batch of ``ETL_JOB_BATCH_SIZE`` tutors (keyset on tutor_id), committed
between batches. Only rows whose values change are written (their ``enriched_at`` becomes the
run's time); the count of those is the rows touched. ``subject_count`` does not depend on time
and is left alone. The window only labels the run.
"""

from __future__ import annotations

import sqlalchemy as sa

from etl_app.jobs.context import JobContext
from etl_app.record_types.tutors import utc_date

# derive(): tenure = as-of UTC date - onboarding_date; new < 30; junior < 90 <= mid < 365 <= senior;
# active today = updated_at's UTC date is the as-of UTC date.
_BATCH = sa.text(
    """
    WITH batch AS (
        SELECT tutor_id, CAST(:today AS date) - onboarding_date AS tenure,
               CAST(updated_at AT TIME ZONE 'UTC' AS date) = CAST(:today AS date) AS active
        FROM tutors WHERE tutor_id > :after ORDER BY tutor_id LIMIT :size
    ), derived AS (
        SELECT tutor_id, tenure, tenure < 30 AS is_new,
               CASE WHEN tenure < 90 THEN 'junior' WHEN tenure < 365 THEN 'mid' ELSE 'senior' END AS level,
               active
        FROM batch
    ), changed AS (
        UPDATE tutors t SET tenure_days = d.tenure, is_new_tutor = d.is_new, experience_level = d.level,
                            is_active_today = d.active, enriched_at = :now
        FROM derived d
        WHERE t.tutor_id = d.tutor_id
          AND (t.tenure_days, t.is_new_tutor, t.experience_level, t.is_active_today)
              IS DISTINCT FROM (d.tenure, d.is_new, d.level, d.active)
        RETURNING 1
    )
    SELECT (SELECT max(tutor_id) FROM batch) AS last, (SELECT count(*) FROM changed) AS changed
    """
)


def run_re_enrich(ctx: JobContext) -> int:
    today = utc_date(ctx.now)
    after, touched = "", 0
    while True:
        row = ctx.conn.execute(
            _BATCH, {"today": today, "now": ctx.now, "after": after, "size": ctx.settings.job_batch_size}
        ).one()
        ctx.commit()
        touched += row.changed
        if row.last is None:
            return touched
        after = row.last
