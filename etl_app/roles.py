"""API keys with roles, and the rights each role has.

``ETL_API_KEYS=key1:operator,key2:reader``: each entry is a key, optionally followed by ``:`` and
its role; a key without a role is ``admin`` (so configurations from before roles keep working).
A key therefore holds neither ``,`` nor ``:``. An unknown role stops the service at start.

Rights, and the roles that have them:

=========== ===================================================== ==========================
right       what it opens                                         roles
=========== ===================================================== ==========================
``submit``  POST records (one, batch, NDJSON, upload)             ingest, admin
``read``    every GET (records, ingestions, dead letters, jobs,   reader, operator, admin
            reports, audit, /metrics)
``operate`` replay, discard and edit dead letters (an edit keeps  operator, admin
            the natural key unless the key also has ``submit``),
            run jobs
``any``     what any valid key may read (/openapi.json)           every role
=========== ===================================================== ==========================

Each key has a **key id**, ``k-`` and the first 8 hex digits of the SHA-256 of the key: stable,
not secret, and the only way a key is named in the audit trail and in logs. The raw key is never
written anywhere by the service.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

INGEST, READER, OPERATOR, ADMIN = "ingest", "reader", "operator", "admin"
ROLES = (INGEST, READER, OPERATOR, ADMIN)

SUBMIT, READ, OPERATE, ANY = "submit", "read", "operate", "any"
RIGHTS = (SUBMIT, READ, OPERATE, ANY)

ROLE_RIGHTS: dict[str, frozenset[str]] = {
    INGEST: frozenset({SUBMIT, ANY}),
    READER: frozenset({READ, ANY}),
    OPERATOR: frozenset({READ, OPERATE, ANY}),
    ADMIN: frozenset(RIGHTS),
}

# Who acts when no API key does: the command line (admin rights) and beat's scheduled runs.
CLI_ACTOR = "cli"
BEAT_ACTOR = "beat"


def key_id(key: str) -> str:
    """The key's stable, non-secret name: ``k-`` + the first 8 hex digits of its SHA-256."""
    return "k-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ApiKey:
    secret: str
    role: str

    @cached_property
    def id(self) -> str:
        """Worked out once per key (a SHA-256): authentication names the key of every request by it."""
        return key_id(self.secret)

    def may(self, right: str) -> bool:
        return right in ROLE_RIGHTS[self.role]

    def __repr__(self) -> str:  # never the secret, should one be printed or logged
        return f"ApiKey(id={self.id!r}, role={self.role!r})"


def parse_key(entry: str) -> ApiKey:
    """``key`` (admin) or ``key:role``; :class:`ValueError` for an unknown role or an empty key."""
    secret, sep, role = entry.strip().rpartition(":")
    if not sep:
        secret, role = role, ADMIN
    secret, role = secret.strip(), role.strip()
    if not secret:
        raise ValueError("ETL_API_KEYS: an entry has a role but no key")
    if role not in ROLES:
        known = ", ".join(ROLES)
        raise ValueError(f"ETL_API_KEYS: key {key_id(secret)} has an unknown role {role!r}; roles are {known}")
    return ApiKey(secret, role)


def parse_keys(entries: Iterable[str]) -> tuple[ApiKey, ...]:
    return tuple(parse_key(entry) for entry in entries if entry.strip())


def find_key(presented: str, keys: Iterable[ApiKey]) -> ApiKey | None:
    """The key ``presented`` is, compared in constant time with every configured key."""
    found = None
    token = presented.encode()
    for key in keys:
        if hmac.compare_digest(token, key.secret.encode()) and found is None:
            found = key
    return found
