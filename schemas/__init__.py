"""marshmallow schemas of the record types: one module a type, shared fields in ``common``."""
