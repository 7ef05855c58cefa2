"""Record types: the public plugin API and the built-in tutoring types.

A record type is a marshmallow schema (``schemas/<name>.py``), a derive function and a table,
declared as a :class:`RecordType` and registered under its plural name. The built-in types
live beside this module; another package adds its own through the ``etl_app.record_types``
entry-point group. The API, the tasks and the migrations read :func:`get_registry`.
"""

from etl_app.record_types.contract import SchemaContract
from etl_app.record_types.registry import (
    BUILTIN_MODULES,
    Expected,
    FieldErrors,
    ParentRef,
    RecordType,
    Registry,
    get_registry,
    normalise_errors,
)

__all__ = [
    "BUILTIN_MODULES",
    "Expected",
    "FieldErrors",
    "ParentRef",
    "RecordType",
    "Registry",
    "SchemaContract",
    "get_registry",
    "normalise_errors",
]
