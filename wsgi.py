"""Process entry points: ``gunicorn wsgi:app`` and ``celery -A wsgi:celery worker``."""

from etl_app.web.app import create_app

app = create_app()
celery = app.extensions["celery"]
