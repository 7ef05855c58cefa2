"""Who the embedded PostgreSQL runs as when the launcher runs as root.

PostgreSQL refuses to run as root, so as root its programs run as an unprivileged account:
``pg_account`` if given; else the owner of an existing ``var/postgres`` if that is not root;
else the first of ``postgres`` and ``nobody`` that exists. That account needs search (x)
permission on every parent of the data directory and of the binaries; :func:`check_access`
says which directory blocks it. Not as root, PostgreSQL runs as the current user.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from etl_app.local.errors import EmbeddedServiceError

#: Accounts tried, in order, for running PostgreSQL when this process runs as root.
ROOT_FALLBACK_ACCOUNTS = ("postgres", "nobody")


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def resolve_account(pg_data: Path, requested: str | None) -> Any:
    """The account (``pwd.struct_passwd``) PostgreSQL runs as; None when not root."""
    if not is_root():
        return None
    import pwd

    if requested:
        try:
            return pwd.getpwnam(requested)
        except KeyError:
            raise EmbeddedServiceError(f"no such account: {requested!r}") from None
    with contextlib.suppress(FileNotFoundError, KeyError):
        owner = pg_data.stat().st_uid
        if owner != 0:
            return pwd.getpwuid(owner)
    for name in ROOT_FALLBACK_ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EmbeddedServiceError(
        "running as root, and PostgreSQL refuses to run as root: found none of the accounts "
        f"{', '.join(ROOT_FALLBACK_ACCOUNTS)} to run it as; create one or run as a normal user"
    )


def run_as(account: Any) -> dict[str, Any]:
    """subprocess keyword arguments that run a command as ``account`` (None: as this user)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGPORT, PGDATA...
    kwargs: dict[str, Any] = {"env": env, "cwd": "/"}
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    return kwargs


def check_access(account: Any, pg_data: Path, bin_dir: Path) -> None:
    """As root, check the PostgreSQL account can reach PGDATA and the binaries; say what to fix."""
    if account is None:
        return
    check = 'cd -- "$1" && test -w . && test -x "$2"'
    proc = subprocess.run(
        ["/bin/sh", "-c", check, "sh", str(pg_data), str(bin_dir / "postgres")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        **run_as(account),
    )
    if proc.returncode == 0:
        return
    parents = (pg_data.parent, bin_dir)
    blocked = sorted({str(d) for p in parents for d in unsearchable_dirs(p, account)})
    raise EmbeddedServiceError(
        "running as root, so the embedded PostgreSQL runs as the unprivileged account "
        f"{account.pw_name!r} (PostgreSQL refuses to run as root), but that account cannot reach "
        f"{pg_data} or {bin_dir}"
        + (f"; no search (x) permission on: {', '.join(blocked)}" if blocked else "")
        + ". Fix the permissions (e.g. chmod o+x on those directories), move the project, "
        "run as a normal user, or set DATABASE_URL."
    )


def unsearchable_dirs(path: Path, account: Any) -> list[Path]:
    """Directories from / down to ``path`` that ``account`` may not search (by mode bits)."""
    import grp

    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    out = []
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError:
            continue
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            out.append(d)
    return out
