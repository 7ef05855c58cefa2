"""etl_app: a Celery task-graph ETL service with a thin Flask ingest API.

The app factory is :func:`etl_app.web.app.create_app` (``wsgi.py`` calls it)."""

__version__ = "0.1.0"
