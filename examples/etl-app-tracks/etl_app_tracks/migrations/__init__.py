"""The Alembic revisions of the tracks table: the branch ``tracks``, beside etl_app's own chain.

Named by the ``etl_app.migrations`` entry point; ``etl-app migrate`` adds this folder to
Alembic's version locations and upgrades every branch. The first revision starts the branch
(``down_revision = None``, ``branch_labels = ("tracks",)``); each later one names the one
before (``revision = "tracks_0002"``, ``down_revision = "tracks_0001"``). Revision ids share
one namespace with etl_app's (``0001``...), hence the ``tracks_`` prefix.
"""
