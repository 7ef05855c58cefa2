"""Scheduled jobs: the registry (``registry.py``), the runner that takes each job's lock and
records its runs in ``job_runs`` (``runner.py``), and the jobs themselves, one module each; a job
is a plain function ``run(ctx: JobContext) -> int`` (``context.py``). Beat, ``etl-app jobs run``
and ``POST /api/v1/jobs/<name>/run`` all go through :func:`etl_app.jobs.runner.run_job`."""
