"""Hosts on one machine: Linux network namespaces on a bridge of their own (root only).

:class:`Hosts` makes ``count`` namespaces ``etl-<run>-h1`` … on a /24 of 10.231.0.0/16 that no
interface of the machine uses yet: the root namespace is ``10.231.N.1`` on a bridge
``etl<run>b``, host ``i`` is ``10.231.N.(10+i)`` on its own veth pair (root side ``etl<run>v<i>``,
in the bridge; the namespace side ``eth0``). A host has its loopback and that link, and no route
anywhere else: what runs in it reaches the root namespace's servers on ``10.231.N.1`` and the
other hosts, nothing more. :meth:`Hosts.cut` takes a host's link down (its packets are dropped,
nobody is told, as when a cable or a switch port dies) and :meth:`Hosts.restore` brings it back.

``<run>`` is the creating process's pid in hex: :func:`remove_leftovers` deletes what a run whose
process is gone left behind (a killed test), and :meth:`Hosts.destroy` removes everything at the
end, also after a failure.

:class:`TcpForwarder` relays TCP connections from one address to another (a broker that listens
on 127.0.0.1 only, reached by the hosts through ``10.231.N.1``), and :class:`RabbitVhost` is a
RabbitMQ virtual host of a run's own on the machine's RabbitMQ (``rabbitmqctl``). Neither
reconfigures the broker.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import threading

NET = ipaddress.ip_network("10.231.0.0/16")
NS_PREFIX = "etl-"
LINK_PREFIX = "etl"
VHOST_PREFIX = "etl-hosts-"
_NS_NAME = re.compile(r"^etl-([0-9a-f]+)-h\d+$")
_LINK_NAME = re.compile(r"^etl([0-9a-f]+)(?:b|v\d+)$")
_VHOST_NAME = re.compile(r"^etl-hosts-([0-9a-f]+)$")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def netns_available() -> str | None:
    """Why namespaces cannot be made here (None: they can): root and the ``ip`` command."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    try:
        ip("netns", "list")
    except (OSError, RuntimeError) as exc:
        return f"ip netns does not work here: {exc}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_run(name: str, pattern: re.Pattern[str]) -> bool:
    match = pattern.match(name)
    return bool(match) and not _pid_alive(int(match.group(1), 16))


def remove_leftovers() -> list[str]:
    """Delete the namespaces, links and RabbitMQ virtual hosts of runs whose process is gone;
    what was deleted."""
    removed = []
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if _dead_run(name, _NS_NAME):
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if _dead_run(name, _LINK_NAME):
            ip("link", "del", name, check=False)
            removed.append(name)
    if RabbitVhost.available() is None:
        for name in RabbitVhost.list():
            if _dead_run(name, _VHOST_NAME):
                RabbitVhost(name).delete()
                removed.append(f"vhost {name}")
    return removed


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in ip("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    return used


def free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of 10.231.0.0/16 that no address of the machine overlaps, starting the search at ``seed``."""
    used = _subnets_in_use()
    for step in range(254):
        net = ipaddress.ip_network(f"10.231.{(seed + step) % 254 + 1}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 left in 10.231.0.0/16")


class Hosts:
    """``count`` network namespaces on a bridge of their own; a context manager that removes them."""

    def __init__(self, count: int = 3) -> None:
        self.count = count
        self.run = f"{os.getpid():x}"
        self.bridge = f"{LINK_PREFIX}{self.run}b"
        self.subnet: ipaddress.IPv4Network | None = None
        self.created = False

    # -- names and addresses -----------------------------------------------------------------

    def namespace(self, host: int) -> str:
        return f"{NS_PREFIX}{self.run}-h{host}"

    def link(self, host: int) -> str:
        """The root-namespace end of ``host``'s veth pair (the one :meth:`cut` takes down)."""
        return f"{LINK_PREFIX}{self.run}v{host}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge, where the servers listen for the hosts."""
        assert self.subnet is not None, "create() first"
        return str(self.subnet.network_address + 1)

    def address(self, host: int) -> str:
        assert self.subnet is not None, "create() first"
        return str(self.subnet.network_address + 10 + host)

    def exec_prefix(self, host: int) -> list[str]:
        """Put this before a command's argv to run it on ``host``."""
        return ["ip", "netns", "exec", self.namespace(host)]

    # -- life ---------------------------------------------------------------------------------

    def create(self) -> Hosts:
        reason = netns_available()
        if reason:
            raise RuntimeError(reason)
        remove_leftovers()
        if self.namespace(1) in ip("netns", "list").stdout.split():
            raise RuntimeError(f"{self.namespace(1)} exists: one Hosts per process at a time")
        self.subnet = free_subnet(os.getpid())
        self.created = True
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for host in range(1, self.count + 1):
                ns, link, peer = self.namespace(host), self.link(host), f"{LINK_PREFIX}{self.run}p{host}"
                ip("netns", "add", ns)
                ip("link", "add", link, "type", "veth", "peer", "name", peer)
                ip("link", "set", peer, "netns", ns)
                ip("link", "set", link, "master", self.bridge)
                ip("link", "set", link, "up")
                ip("-n", ns, "link", "set", peer, "name", "eth0")
                ip("-n", ns, "addr", "add", f"{self.address(host)}/{self.subnet.prefixlen}", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def cut(self, host: int) -> None:
        """Take ``host``'s link down: from now on its packets go nowhere, in both directions."""
        ip("link", "set", self.link(host), "down")

    def restore(self, host: int) -> None:
        ip("link", "set", self.link(host), "up")

    def destroy(self) -> None:
        """Remove the namespaces, the links and the bridge (what exists of them)."""
        if not self.created:
            return
        for host in range(1, self.count + 1):
            ip("netns", "del", self.namespace(host), check=False)  # takes eth0, and with it its peer
            ip("link", "del", self.link(host), check=False)
        ip("link", "del", self.bridge, check=False)
        self.created = False

    def __enter__(self) -> Hosts:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# -- a TCP relay ---------------------------------------------------------------------------------


class TcpForwarder:
    """Accepts connections on ``listen`` (host, port; port 0: any free one) and relays each one to
    ``target``, two threads a connection. When either side ends or fails, both are closed: a
    broker that drops a silent client's connection has the relay drop the client's side too."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen)
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.address[1]

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._close(pair)

    def _close(self, pair: tuple[socket.socket, socket.socket]) -> None:
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other pump blocked on it
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._close(pair)


# -- a RabbitMQ virtual host of a run's own -------------------------------------------------------


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stdout.strip()} {out.stderr.strip()}")
    return out


class RabbitVhost:
    """A virtual host on the machine's RabbitMQ for one run, the ``guest`` user allowed everything
    in it; :meth:`delete` removes it with its queues."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{VHOST_PREFIX}{os.getpid():x}"

    @staticmethod
    def available() -> str | None:
        """Why RabbitMQ cannot be used here (None: it can)."""
        try:
            _rabbitmqctl("list_vhosts")
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"rabbitmqctl does not answer: {exc}"
        return None

    @staticmethod
    def list() -> list[str]:
        return [line.strip() for line in _rabbitmqctl("-s", "list_vhosts", "name").stdout.splitlines() if line.strip()]

    def create(self) -> RabbitVhost:
        if self.name in self.list():
            self.delete()
        _rabbitmqctl("add_vhost", self.name)
        _rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _rabbitmqctl("delete_vhost", self.name)

    def close_connections(self, reason: str) -> None:
        """Have the broker close every client connection to this virtual host (as a lost link
        would end them, but at once)."""
        _rabbitmqctl("close_all_connections", "-p", self.name, reason)

    def url(self, host: str, port: int, heartbeat: float) -> str:
        return f"amqp://guest:guest@{host}:{port}/{self.name}?heartbeat={heartbeat:g}"
