"""A ``tracks`` record type for etl_app, kept in a package of its own.

- ``schema.py``: the marshmallow schema of one track (what the API accepts).
- ``record_type.py``: the table, the as-of check, the derived fields and the ``RecordType``
  named by the ``etl_app.record_types`` entry point.
- ``migrations/``: the Alembic revisions of the table, on the branch ``tracks`` (entry point
  ``etl_app.migrations``), applied by ``etl-app migrate`` beside etl_app's own.
"""
