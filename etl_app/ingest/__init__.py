"""Ingest: the outbox (accepted records committed before the API answers), the one way chains are
sent after a commit, the relay that sends small submissions together, the sweeper that re-drives
what did not settle, and ingestion progress."""
