"""The records page(s) of the operator's UI (etl_app.ui)."""

from __future__ import annotations
