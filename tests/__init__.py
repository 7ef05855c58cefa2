"""The test suite, a folder per part of etl_app it tests (tests/api, tests/pipeline, …); tests/e2e
(real gunicorn and celery processes, tests/e2e/ui in a browser) and tests/faults (kills and outages)
cross the domains; tests/helpers holds what they share."""
