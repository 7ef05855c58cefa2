"""How the embedded PostgreSQL runs when the launcher runs as root.

PostgreSQL refuses to run as root: initdb, pg_ctl and postgres each stop when their effective
uid is 0. Not as root, they simply run as the current user. As root they run one of two ways,
chosen by :func:`resolve`:

**In a user namespace** (the default, where the kernel allows it; probed once). Each PostgreSQL
program starts in a new user namespace in which one unprivileged uid and gid stand for root
outside, and nothing else is mapped: those of the ``postgres`` account, else of ``nobody``
(initdb looks its own user up in /etc/passwd, so the uid must have an entry). Inside, the
program's uid is not 0, so PostgreSQL's check passes; files owned by root (PGDATA, the socket
directory) appear owned by that uid, so its ownership checks pass too; and the kernel grants
access to them as to their owner, root, by the permission bits alone: the program has no
capability outside the namespace, so no permission override either. PGDATA and the socket
directory stay owned by root, mode 0700, and nothing needs to reach into the project but root
itself: a clone in a private folder (root's home, a ``mktemp -d`` directory) works. The
namespace is entered in the child between fork and exec (``preexec_fn``): ``unshare(CLONE_NEWUSER)``
through ctypes, then ``deny`` into /proc/self/setgroups and the one-line maps
``<inner> 0 1`` into /proc/self/uid_map and gid_map, which the kernel lets a process write for
itself without further privilege. This needs nothing installed (the ``unshare`` command does
the same with ``--map-user``/``--map-group``, but only from util-linux 2.38 on).

**As an unprivileged account** otherwise: the account given as ``pg_account``; the owner of an
existing ``var/postgres`` that is not root (a cluster made that way stays usable); or, where user
namespaces are not available (not Linux, ``user.max_user_namespaces`` 0, a container's seccomp
filter), the first of ``postgres`` and ``nobody``. PGDATA and the socket directory then belong to
that account, which needs search (x) permission on every parent of PGDATA and of the binaries
in the virtualenv; :func:`check_access` says which directory blocks it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl_app.local.errors import EmbeddedServiceError

log = logging.getLogger(__name__)

#: Accounts tried, in order, for the uid PostgreSQL has (inside a user namespace, or outright)
#: when this process runs as root.
ROOT_FALLBACK_ACCOUNTS = ("postgres", "nobody")
_CLONE_NEWUSER = 0x10000000
#: The exit status of a program that could not enter its user namespace (its output says why).
NAMESPACE_FAILED = 126


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class RunAs:
    """How PostgreSQL's programs run: as this process's user (``account`` None: not root); in a
    user namespace as ``account`` inside and root outside (``in_namespace``); or as ``account``."""

    account: Any = None  # pwd.struct_passwd
    in_namespace: bool = False

    @property
    def owner(self) -> tuple[int, int]:
        """The uid and gid that own PGDATA and the socket directory."""
        if self.account is None or self.in_namespace:
            return os.getuid(), os.getgid()
        return self.account.pw_uid, self.account.pw_gid

    @property
    def system_account(self) -> str | None:
        """The account whose uid PostgreSQL's processes have, when not this process's own."""
        return self.account.pw_name if self.account is not None and not self.in_namespace else None

    def describe(self) -> str:
        if self.account is None:
            return ""
        if self.in_namespace:
            return f" as root, seen as {self.account.pw_name!r} inside a user namespace"
        return f" as user {self.account.pw_name!r}"

    def subprocess_kwargs(self) -> dict[str, Any]:
        """subprocess keyword arguments that run a PostgreSQL program this way."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGPORT, PGDATA...
        kwargs: dict[str, Any] = {"env": env, "cwd": "/"}
        account = self.account
        if account is not None:
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
            if self.in_namespace:
                kwargs["preexec_fn"] = _user_namespace_entry(account.pw_uid, account.pw_gid)
            else:
                kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        return kwargs


def resolve(pg_data: Path, requested: str | None) -> RunAs:
    """How PostgreSQL runs here (see the module docstring for the order)."""
    if not is_root():
        return RunAs()
    import pwd

    if requested:
        try:
            return RunAs(pwd.getpwnam(requested))
        except KeyError:
            raise EmbeddedServiceError(f"no such account: {requested!r}") from None
    with contextlib.suppress(FileNotFoundError, KeyError):
        owner = pg_data.stat().st_uid
        if owner != 0:
            return RunAs(pwd.getpwuid(owner))
    for name in ROOT_FALLBACK_ACCOUNTS:
        with contextlib.suppress(KeyError):
            account = pwd.getpwnam(name)
            break
    else:
        raise EmbeddedServiceError(
            "running as root, and PostgreSQL refuses to run as root: found none of the accounts "
            f"{', '.join(ROOT_FALLBACK_ACCOUNTS)} to run it as; create one or run as a normal user"
        )
    works, why_not = user_namespaces_work(account.pw_uid, account.pw_gid)
    if works:
        return RunAs(account, in_namespace=True)
    log.warning(
        "running as root and user namespaces are not available (%s): the embedded PostgreSQL runs as "
        "the account %r, which needs search (x) permission on every parent of %s and of the virtualenv",
        why_not,
        account.pw_name,
        pg_data,
    )
    return RunAs(account)


@functools.cache
def user_namespaces_work(inner_uid: int, inner_gid: int) -> tuple[bool, str]:
    """Whether a program can run in a user namespace as ``inner_uid`` standing for this uid
    (checked once per process); if not, why."""
    if not sys.platform.startswith("linux"):
        return False, "they are a Linux feature"
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", 'test "$(id -u)" = "$1"', "sh", str(inner_uid)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            preexec_fn=_user_namespace_entry(inner_uid, inner_gid),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    if proc.returncode != 0:
        return False, proc.stderr.decode("utf-8", "replace").strip() or f"the probe exited {proc.returncode}"
    return True, ""


def _user_namespace_entry(inner_uid: int, inner_gid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the child into a new user namespace where ``inner_uid`` and
    ``inner_gid`` stand for this process's uid and gid. On failure the child writes why to its
    stderr and exits with :data:`NAMESPACE_FAILED` (an exception there would lose the reason)."""
    import ctypes

    unshare = ctypes.CDLL(None, use_errno=True).unshare
    writes = (
        ("/proc/self/setgroups", b"deny"),  # required before an unprivileged gid_map
        ("/proc/self/uid_map", f"{inner_uid} {os.geteuid()} 1".encode()),
        ("/proc/self/gid_map", f"{inner_gid} {os.getegid()} 1".encode()),
    )

    def enter() -> None:
        try:
            if unshare(_CLONE_NEWUSER) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)}")
            for path, data in writes:
                try:
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    raise OSError(exc.errno, f"writing {path}: {exc.strerror}") from None
        except OSError as exc:
            os.write(2, f"could not enter a user namespace: {exc.strerror}\n".encode())
            os._exit(NAMESPACE_FAILED)

    return enter


def check_access(run_as: RunAs, pg_data: Path, bin_dir: Path) -> None:
    """As root, check PostgreSQL's programs can reach PGDATA and the binaries; say what to fix."""
    if run_as.account is None:
        return
    check = 'cd -- "$1" && test -w . && test -x "$2"'
    proc = subprocess.run(
        ["/bin/sh", "-c", check, "sh", str(pg_data), str(bin_dir / "postgres")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        **run_as.subprocess_kwargs(),
    )
    if proc.returncode == 0:
        return
    if run_as.in_namespace:
        uid, groups = os.getuid(), {os.getgid(), *os.getgroups()}
        who = (
            "in a user namespace with root's uid but without root's power to override permissions "
            "(PostgreSQL refuses to run as root), and so"
        )
    else:
        uid, groups = run_as.account.pw_uid, _groups_of(run_as.account)
        who = (
            f"as the unprivileged account {run_as.account.pw_name!r} (PostgreSQL refuses to run as root), "
            "but that account"
        )
    parents = (pg_data.parent, bin_dir)
    blocked = sorted({str(d) for p in parents for d in unsearchable_dirs(p, uid, groups)})
    raise EmbeddedServiceError(
        f"running as root, so the embedded PostgreSQL runs {who} cannot reach {pg_data} or {bin_dir}"
        + (f"; no search (x) permission on: {', '.join(blocked)}" if blocked else "")
        + (f" ({proc.stderr.decode('utf-8', 'replace').strip()})" if proc.returncode == NAMESPACE_FAILED else "")
        + ". Fix the permissions (e.g. chmod o+x on those directories), move the project, "
        "run as a normal user, or set DATABASE_URL."
    )


def _groups_of(account: Any) -> set[int]:
    import grp

    return {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}


def unsearchable_dirs(path: Path, uid: int, groups: set[int]) -> list[Path]:
    """Directories from / down to ``path`` that ``uid`` (in ``groups``) may not search, by mode bits."""
    out = []
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError:
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            out.append(d)
    return out
