"""`make bench`: etl_app's throughput against the database's raw limit and a naive baseline.

Run ``python -m bench --help``. Results are printed as a table and written as JSON to
``bench-results/<timestamp>.json``.
"""
