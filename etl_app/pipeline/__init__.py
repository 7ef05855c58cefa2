"""The pipeline's domain steps as plain functions, and the chunk message between its stages.

Nothing here imports Celery but :mod:`etl_app.pipeline.messages`, which builds and sends the
chains. Each step takes a SQLAlchemy ``Connection`` (the caller owns the transaction) and
plain data.
"""
