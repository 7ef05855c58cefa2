"""The record-type registry: the one place the API, the tasks and the migrations read.

A record type is a marshmallow schema (``schemas/<name>.py``), a derive function and a
table (``etl_app/record_types/<name>.py``), registered here under its plural name. The
built-in tutoring types are registered on first use; other packages add their own
through the ``etl_app.record_types`` entry-point group (each entry point names a
:class:`RecordType`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

import marshmallow as ma
import sqlalchemy as sa

from etl_app.record_types import contract as contracts
from etl_app.record_types.contract import EXTRA_COLUMN, KEEP, STRICT, SchemaContract

log = logging.getLogger(__name__)

BUILTIN_MODULES = (
    "etl_app.record_types.tutors",
    "etl_app.record_types.students",
    "etl_app.record_types.sessions",
    "etl_app.record_types.feedback",
)

FieldErrors = dict[str, list[str]]


@dataclass(frozen=True)
class ParentRef:
    """A reference from a child record to its parent record type.

    ``field`` is the child's field holding the parent's natural key; ``record_type``
    the parent's type name; ``must_match`` pairs ``(child_field, parent_field)`` that
    must agree once the parent exists, else the child is a ``parent_mismatch``.
    ``columns``: the parent's columns the child's ``derive`` reads from the parent row; enrich
    reads those, the parent's key and the ``must_match`` fields, nothing else. None (the
    default) reads every column, for a type that does not say: a chunk of 1,000 sessions
    refers to about 700 parents, and their whole rows cost enrich about 7 µs of CPU a record.
    """

    field: str
    record_type: str
    must_match: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Expected:
    """An optional field its data owners want filled: quality's ``completeness.overall`` is the mean
    of the shares of a type's expected fields (docs/quality.md).

    ``waived_when``: ``(field, value)``; a record whose payload has ``field`` equal to ``value``
    (compared as JSON) counts as having this field: a no-show session has no ``actual_start``
    (it must be null then), so ``Expected("actual_start", waived_when=("no_show", True))``.
    A plain field name in ``RecordType.expected`` is an ``Expected`` with no waiver.
    """

    field: str
    waived_when: tuple[str, Any] | None = None


@dataclass(frozen=True)
class RecordType:
    """Everything the pipeline needs to know about one record type.

    - ``schema``: marshmallow schema class; ``load`` gives Python values (str, int,
      float, bool, list, ``date``, timezone-aware ``datetime``).
    - ``check_as_of(data, as_of)``: optional; applies defaults and rules that depend on
      the record's as-of moment (its ``received_at``); mutates ``data`` and returns
      field errors (empty when valid).
    - ``derive(data, as_of, parents)``: returns the derived fields; ``parents`` maps a
      parent type name to the parent's stored row (a mapping of column values).
    - ``table``: the SQLAlchemy table on :data:`etl_app.db.metadata` whose columns are
      the input fields, the derived fields and the lineage columns.
    - ``time_field``: the input timestamp that says when the record's event happened, used
      for timeliness when the payload gives no ``event_time`` (None: the type has none).
    - ``fast_load``: optional; the schema's fast path (:func:`schemas.fast.fast_loader`): the
      loaded values of a valid payload, exactly as the schema loads them, or None when it
      refuses the payload (then the schema runs, for its error messages). A type without one is
      validated by its schema alone.
    - ``expected``: the optional input fields its data owners want filled (names, or
      :class:`Expected` for a field with a waiver), whose shares quality's ``completeness.overall``
      averages; none by default (then ``overall`` is null and the score leaves it out). Checked
      when the type is registered: each must be an optional field of the schema.
    - ``lookups``: external lookups asked in enrich, each a callable taking the process's
      ``Settings`` and returning a :class:`etl_app.lookups.Provider` (e.g.
      :func:`etl_app.lookups.geocoder.geocoder_provider`). The table then has a nullable column for
      every field a provider fills, plus ``lookup_status`` (text) and ``looked_up_at``
      (timestamptz); see :mod:`etl_app.pipeline.lookups`.
    - ``contract``: what happens to unknown fields and to wrong-typed optional values
      (:class:`etl_app.record_types.contract.SchemaContract`; by default both are rejected, as
      the built-in types declare). ``ETL_SCHEMA_CONTRACT`` overrides it per type at start-up
      (:meth:`Registry.apply_contracts`). ``keep`` needs an ``extra`` jsonb column on the table
      (:func:`etl_app.db.extra_column`); the loaded values then carry the kept fields under
      ``extra`` (None when there were none), which is where the table's column takes them from.
    """

    name: str
    key: str
    schema: type[ma.Schema]
    derive: Callable[[dict[str, Any], datetime, Mapping[str, Mapping[str, Any]]], dict[str, Any]]
    table: sa.Table
    parents: tuple[ParentRef, ...] = ()
    check_as_of: Callable[[dict[str, Any], datetime], FieldErrors] | None = None
    schema_version: int = 1
    description: str = ""
    time_field: str | None = None
    expected: tuple[str | Expected, ...] = ()
    lookups: tuple[Callable[[Any], Any], ...] = ()
    contract: SchemaContract = STRICT
    fast_load: Callable[[Any], dict[str, Any] | None] | None = field(default=None, repr=False, compare=False)
    _schema_instance: ma.Schema | None = field(default=None, repr=False, compare=False)

    @property
    def loader(self) -> ma.Schema:
        """A shared schema instance (schemas are stateless once built)."""
        if self._schema_instance is None:
            object.__setattr__(self, "_schema_instance", self.schema())
        return self._schema_instance  # type: ignore[return-value]

    @property
    def expected_fields(self) -> tuple[Expected, ...]:
        """``expected`` with every plain name as an :class:`Expected`, in the declared order."""
        return tuple(e if isinstance(e, Expected) else Expected(e) for e in self.expected)

    def expected_errors(self) -> list[str]:
        """What is wrong with ``expected`` (empty when nothing): each must name an optional input
        field of the schema, once, and a waiver a field of the schema."""
        fields = self.loader.fields
        errors: list[str] = []
        seen: set[str] = set()
        for e in self.expected_fields:
            if e.field in seen:
                errors.append(f"{e.field!r} is expected twice")
            seen.add(e.field)
            if e.field not in fields or e.field in ("source", "event_time"):
                errors.append(f"{e.field!r} is not an input field of {self.schema.__name__}")
            elif fields[e.field].required:
                errors.append(f"{e.field!r} is required: only optional fields can be expected")
            if e.waived_when is not None and e.waived_when[0] not in fields:
                errors.append(f"{e.field!r} is waived by {e.waived_when[0]!r}, not a field of {self.schema.__name__}")
        return errors

    def validate(self, payload: Any, as_of: datetime) -> tuple[dict[str, Any] | None, FieldErrors]:
        """Check one payload; return ``(data, {})`` when valid, ``(None, errors)`` otherwise.

        The type's fast path (``fast_load``) runs first when it has one; what it refuses goes
        through the type's contract (unknown fields kept or dropped, wrong-typed optional values
        nulled: :mod:`etl_app.record_types.contract`) and then the schema, which gives the errors
        (and loads what the fast path was not sure of)."""
        if not isinstance(payload, dict):
            return None, {"_schema": ["Each record must be a JSON object."]}
        data = self.fast_load(payload) if self.fast_load is not None else None
        if data is None:
            if self.contract.strict:
                data, errors = self._load(payload)
            else:
                applied = contracts.apply(self.contract, self.loader, payload)
                data, errors = self._load(applied.payload)
                errors = {**(applied.errors or {}), **errors}
                if not errors and self.contract.unknown == KEEP:
                    data[EXTRA_COLUMN] = applied.extra
            if errors:
                return None, errors
        if self.check_as_of is not None:
            errors = self.check_as_of(data, as_of)
            if errors:
                return None, errors
        return data, {}

    def _load(self, payload: dict[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        """The schema's verdict on a payload: ``(data, {})`` or ``({}, errors)``."""
        try:
            return self.loader.load(payload), {}
        except ma.ValidationError as exc:
            return {}, normalise_errors(exc.messages)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # a value no field rule foresaw
            log.warning("%s: schema raised %s on a payload; treated as invalid", self.name, type(exc).__name__)
            return {}, {"_schema": [f"the record could not be read: {type(exc).__name__}"]}

    def natural_key(self, payload: Any) -> str | None:
        """The natural key of a raw payload, if it has a usable one."""
        if isinstance(payload, dict):
            value = payload.get(self.key)
            if isinstance(value, str):
                return value.strip()[:64] or None
        return None


def check_contract(record_type: RecordType, contract: SchemaContract) -> None:
    """ValueError when ``record_type`` cannot hold what ``contract`` asks: ``keep`` needs a table column
    ``extra`` (jsonb) and no input field of that name."""
    if contract.unknown != KEEP:
        return
    column = record_type.table.c.get(EXTRA_COLUMN)
    if column is None or not isinstance(column.type, sa.JSON):
        raise ValueError(
            f"{record_type.name}: unknown=keep needs a jsonb column {EXTRA_COLUMN!r} on table "
            f"{record_type.table.name!r} (etl_app.db.extra_column())"
        )
    if EXTRA_COLUMN in record_type.loader.fields:
        raise ValueError(f"{record_type.name}: unknown=keep stores unknown fields in {EXTRA_COLUMN!r}, an input field")


def normalise_errors(messages: Any) -> FieldErrors:
    """marshmallow error messages as ``{field: [message, ...]}`` (nested ones flattened)."""
    if isinstance(messages, list):
        return {"_schema": [str(m) for m in messages]}
    out: FieldErrors = {}
    for name, value in messages.items():
        if isinstance(value, dict):
            for sub, msgs in normalise_errors(value).items():
                out[f"{name}.{sub}" if sub != "_schema" else str(name)] = msgs
        elif isinstance(value, list):
            out[str(name)] = [str(m) for m in value]
        else:
            out[str(name)] = [str(value)]
    return out


class Registry:
    """Record types by name, in registration order."""

    def __init__(self) -> None:
        self._types: dict[str, RecordType] = {}
        self._declared: dict[str, RecordType] = {}  # as registered, before ETL_SCHEMA_CONTRACT

    def register(self, record_type: RecordType) -> RecordType:
        errors = record_type.expected_errors()
        if errors:
            raise ValueError(f"record type {record_type.name!r}: expected fields: {'; '.join(errors)}")
        existing = self._declared.get(record_type.name)
        if existing is not None and existing is not record_type:
            raise ValueError(f"record type {record_type.name!r} is registered already")
        check_contract(record_type, record_type.contract)
        self._types[record_type.name] = self._declared[record_type.name] = record_type
        return record_type

    def apply_contracts(self, setting: str, *, max_extra_bytes: int = contracts.DEFAULT_MAX_EXTRA_BYTES) -> None:
        """Each type's contract: its declared one, with the modes ``setting`` (``ETL_SCHEMA_CONTRACT``,
        :func:`etl_app.record_types.contract.parse_overrides`) gives it and the kept fields' byte
        bound. Recomputed from the declared contracts at each call, so a process (or a test) that
        applies another setting does not inherit the last one. ValueError (naming the type and the
        rule) for an unknown type or a ``keep`` its table cannot store: the process stops at start."""
        overrides = contracts.parse_overrides(setting)
        unknown = sorted(set(overrides) - set(self._declared))
        if unknown:
            raise ValueError(
                f"{contracts.SETTING}: no record type {', '.join(map(repr, unknown))} "
                f"(the types: {', '.join(self._declared)})"
            )
        chosen: dict[str, RecordType] = {}
        for name, declared in self._declared.items():
            modes = overrides.get(name, {})
            contract = dataclasses.replace(declared.contract, **modes, max_extra_bytes=max_extra_bytes)
            try:
                check_contract(declared, contract)
            except ValueError as exc:  # the declared contract passed at registration: the setting asks it
                raise ValueError(f"{contracts.SETTING}: {exc}") from None
            same = contract == declared.contract
            chosen[name] = declared if same else dataclasses.replace(declared, contract=contract)
        self._types = chosen

    def get(self, name: str) -> RecordType | None:
        return self._types.get(name)

    def __getitem__(self, name: str) -> RecordType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self):
        return iter(self._types.values())

    def names(self) -> list[str]:
        return list(self._types)


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, with the built-in and plugged-in types loaded once."""
    global _registry
    if _registry is None:
        registry = Registry()
        for module_name in BUILTIN_MODULES:
            registry.register(importlib.import_module(module_name).RECORD_TYPE)
        for ep in entry_points(group="etl_app.record_types"):
            registry.register(ep.load())
        _registry = registry
    return _registry
