"""The ``Idempotency-Key`` request header of the submits and the upload (the IETF httpapi draft
"The Idempotency-Key HTTP Header Field"); the rule that makes it hold is
:mod:`etl_app.ingest.idempotency`'s.

- The value: a Structured Field String as the draft writes it (``"8e03978e-…"``, ``\\"`` and
  ``\\\\`` escaped), or the text as it is, as most clients send it; either way 1 to
  :data:`MAX_LENGTH` printable ASCII characters (space to ``~``). Anything else is a 400
  ``invalid_idempotency_key``. A request without the header costs nothing here: no hash, no query.
- Keys belong to the API key that sent them (its key id): two clients' keys never meet.
- What is compared (the fingerprint): SHA-256 of the method, the path, the media type of
  ``Content-Type`` (lower case; parameters such as ``charset`` left out) and the body's bytes.
  For an upload, instead of the multipart body (whose boundary a client draws anew for each
  try): the file part's file name and media type and the file's bytes.
- The first accepted answer (202) is stored with the submission, in its transaction. The same
  key with the same fingerprint gets it again, byte for byte, with the same status and
  ``Idempotent-Replayed: true``; nothing is stored, validated or sent again. The same key with
  another fingerprint is a 422 ``idempotency_key_reused``. A request refused before anything
  was stored (400, 413, 415, 422) keeps no key: sending it again is judged again.
- A second request while the first is still being stored waits for the first one's commit and
  then gets its answer (no 409 for a request in flight: the wait is bounded by the first
  request's own transaction). Only if the key's answer vanished between the two (it expired
  and was deleted that very moment) is the answer 409 ``idempotency_key_in_use``: send again.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from flask import Response, current_app, request
from marshmallow import Schema

from etl_app.api.common import JSON
from etl_app.api.spec import dump
from etl_app.ingest import idempotency
from etl_app.web.context import ApiError, current_key_id, current_runtime

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_LENGTH = 255
_TEXT = re.compile(r"[\x20-\x7e]+")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_ESCAPE = re.compile(r"\\([\"\\])")
_PIECE = 1024 * 1024


# The OpenAPI document's words for the header (etl_app.api.spec), shared by the submits and the upload.
PARAMETER = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        'Makes the request safe to send again (IETF httpapi draft "The Idempotency-Key HTTP Header Field"): '
        "the same key with the same request gets the first answer again, marked Idempotent-Replayed: true, "
        "and nothing is stored twice; the same key with another body, path or Content-Type is a 422 "
        "idempotency_key_reused. Keys belong to the API key that sends them and are kept "
        "ETL_IDEMPOTENCY_TTL_SECONDS (a day by default). Plain text, or a quoted string as the draft writes it; "
        f"1 to {MAX_LENGTH} printable ASCII characters. A UUID per request (reused by its retries) is a good key."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH, "pattern": r"^[!#-~]([ -~]*[!-~])?$"},
}
ANSWER_HEADERS = {
    REPLAYED: {
        "description": "true when this is the stored answer of an earlier request with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
ERRORS = {
    400: f"malformed body, or a malformed {HEADER}",
    409: f"the {HEADER} changed hands as the request met it (its earlier use expired that moment); send it again",
    422: f"validation failed, or the {HEADER} was used with another request (idempotency_key_reused)",
}


def _refused(message: str) -> ApiError:
    return ApiError(400, "invalid_idempotency_key", f"{HEADER} {message}")


def parse_key(raw: str) -> str:
    """The key a header value names (see the module's rules); an ApiError 400 if it is not one."""
    value = raw.strip(" \t")
    if value.startswith('"'):
        quoted = _SF_STRING.fullmatch(value)
        if quoted is None:
            raise _refused('must be a quoted string of printable ASCII ("…", with \\" and \\\\ escaped) or plain text')
        value = _ESCAPE.sub(r"\1", quoted.group(1))
    if not value:
        raise _refused("is empty")
    if len(value) > MAX_LENGTH:
        raise _refused(f"is {len(value)} characters long; at most {MAX_LENGTH}")
    if not _TEXT.fullmatch(value):
        raise _refused("must hold printable ASCII characters only (space to ~)")
    return value


def fingerprint(parts: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the request's method and path, then ``parts``, each length-prefixed (so
    that no two different lists of parts hash alike)."""
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), *parts):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _file_digest(f: BinaryIO) -> bytes:
    """SHA-256 of the whole file, read from its start; the file is left at its start."""
    f.seek(0)
    digest = hashlib.sha256()
    while piece := f.read(_PIECE):
        digest.update(piece)
    f.seek(0)
    return digest.digest()


@dataclass(frozen=True)
class RequestKey:
    """The request's key, its owner and its fingerprint."""

    owner: str
    key: str
    fingerprint: str

    def claim(self, ingestion_id: uuid.UUID, status: int, body: str, received_at: datetime) -> idempotency.Claim:
        ttl = timedelta(seconds=current_runtime().settings.idempotency_ttl_seconds)
        return idempotency.Claim(
            self.owner, self.key, self.fingerprint, ingestion_id, status, body, received_at, received_at + ttl
        )

    def answer(self, stored: idempotency.Stored | None) -> Response:
        """The stored answer again, or the 422 for a key first used with another request."""
        if stored is None:  # it expired and was deleted as this request met it
            raise ApiError(
                409,
                "idempotency_key_in_use",
                f"the {HEADER} was taken and released while this request was answered; send it again",
                headers={"Retry-After": "1"},
            )
        if stored.fingerprint != self.fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"this {HEADER} was used for another request (another body, path or Content-Type) "
                f"in the last {current_runtime().settings.idempotency_ttl_seconds} s; use a new key for a new request",
                ingestion_id=str(stored.ingestion_id),
            )
        response = Response(stored.body, stored.status, mimetype=JSON)
        response.headers[REPLAYED] = "true"
        return response

    def replay(self) -> Response:
        """The answer of the request that holds the key (after :class:`~etl_app.ingest.idempotency.KeyTaken`)."""
        return self.answer(idempotency.find(current_runtime().engine, self.owner, self.key))

    def replay_if_stored(self, now: datetime) -> Response | None:
        """The stored answer if the key holds a live one, else None: for a request about to be
        refused (a batch none of whose records is valid today may have been accepted then)."""
        stored = idempotency.find(current_runtime().engine, self.owner, self.key, live_at=now)
        return None if stored is None else self.answer(stored)


def _header() -> str | None:
    raw = request.headers.get(HEADER)
    return None if raw is None else parse_key(raw)


def of_body(body: bytes) -> RequestKey | None:
    """The key of a JSON or NDJSON submit (fingerprint: method, path, media type, body); None
    without the header."""
    key = _header()
    if key is None:
        return None
    return RequestKey(current_key_id() or "", key, fingerprint([request.mimetype.encode(), body]))


def of_upload(filename: str | None, media_type: str | None, f: BinaryIO) -> RequestKey | None:
    """The key of an upload (fingerprint: method, path, the file part's name and media type, the
    file's bytes); None without the header."""
    key = _header()
    if key is None:
        return None
    parts = [b"multipart/form-data", (filename or "").encode(), (media_type or "").encode(), _file_digest(f)]
    return RequestKey(current_key_id() or "", key, fingerprint(parts))


def serialise(schema: type[Schema], obj: Any) -> str:
    """The answer's JSON through its documented schema, as the first answer and its replays send it."""
    return current_app.json.dumps(dump(schema, obj))


def first_answer(body: str, status: int) -> Response:
    return Response(body, status, mimetype=JSON)
