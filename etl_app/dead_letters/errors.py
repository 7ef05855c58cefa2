"""What a caller of the dead-letter functions is told: one exception family, translated at each
edge (an HTTP status in the API, a click error in the CLI)."""

from __future__ import annotations

from etl_app.record_types import FieldErrors


class DeadLetterError(Exception):
    """Base of what a caller is told: ``message`` says what is wrong."""


class InvalidParameter(DeadLetterError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class FilterRequired(DeadLetterError):
    """A bulk action with no filter, or with an empty one (``name``), unless it says ``all``."""

    def __init__(self, name: str | None, message: str) -> None:
        super().__init__(message)
        self.name = name


class NotFound(DeadLetterError):
    def __init__(self, dead_letter_id: int) -> None:
        super().__init__(f"no dead letter {dead_letter_id}")


class GroupNotFound(NotFound):
    """No dead letter, of any status, is in this group (etl_app.dead_letters.groups)."""

    def __init__(self, key: str) -> None:
        DeadLetterError.__init__(self, f"no dead-letter group {key}")


class NotOpen(DeadLetterError):
    """Only an open dead letter can be replayed or discarded."""

    def __init__(self, dead_letter_id: int, status: str, record_status: str | None) -> None:
        detail = f" (its record is {record_status})" if record_status else ""
        super().__init__(f"dead letter {dead_letter_id} is {status}{detail}, not open")
        self.status = status


class InvalidPayload(DeadLetterError):
    """The corrected payload does not pass the record type's validation; nothing was changed."""

    def __init__(self, field_errors: FieldErrors) -> None:
        super().__init__("the corrected payload is not valid")
        self.errors = field_errors


class KeyChanged(DeadLetterError):
    """A corrected payload that changes the dead letter's natural key (its record type's key
    field), by a caller that may not submit records: an edit fixes the record it was, it never
    writes another one. Nothing was changed; the audit trail writes it ``refused``."""

    audit_outcome = "refused"

    def __init__(self, field: str, before: object, after: object) -> None:
        super().__init__(
            f"the corrected payload changes the natural key {field} from {before!r} to {after!r}; "
            "an edit must keep the natural key unless the key making it has the submit right"
        )
        self.field, self.before, self.after = field, before, after
