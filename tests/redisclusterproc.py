"""A real Redis Cluster for a test: 3 masters with one replica each, six
``redis-server`` processes on free loopback ports (``RedisProc`` with cluster mode
on), joined by ``redis-cli --cluster create``.

``RedisClusterProc`` can kill a master (SIGKILL, as a crash) and wait until its
replica has taken over its slots, then start the dead one again (it rejoins as a
replica). A node timeout of 1 s keeps a failover within 2-3 s. ``redis_cluster``
is the pytest fixture (function-scoped: a test that kills a master leaves the
cluster changed). A missing ``redis-server`` or ``redis-cli`` fails the test:
``scripts/test`` installs Debian's ``redis-server``, which brings ``redis-cli``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from types import TracebackType

import pytest
from redisproc import MISSING, RedisProc, RedisProcError

NODE_TIMEOUT_MS = 1000
FORM_TIMEOUT = 30.0  # s for the cluster to report ok after create
FAILOVER_TIMEOUT = 30.0  # s for a replica to take over a killed master's slots


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command through redis-cli (its output as text)."""
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


class RedisClusterProc:
    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RedisProcError(MISSING + " (and redis-cli, from the same package)")
        self.masters = masters
        self.replicas = replicas
        extra = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
            "--repl-diskless-sync-delay", "0",  # replicas sync at once, not 5 s after the cluster forms
        )  # fmt: skip
        # the cluster bus on a free port of its own, picked at the node's start
        # (picked here, it could be handed to another node as its port meanwhile,
        # and that node would never start)
        self.nodes = [RedisProc(extra=extra, cluster_bus=True) for _ in range(masters * (1 + replicas))]

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """The cluster URL chatd takes: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def seed_url(self, i: int = 0) -> str:
        """A cluster URL with one seed only."""
        return f"redis+cluster://127.0.0.1:{self.nodes[i].port}"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> RedisClusterProc:
        for node in self.nodes:
            node.start()
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RedisProcError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
        self.wait_ok()
        return self

    def wait_ok(self, within: float = FORM_TIMEOUT) -> None:
        """Until every running node reports cluster_state:ok and sees all slots served
        by a master it can reach."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            running = [n for n in self.nodes if n.running]
            if all("cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in running) and self._covered():
                return
            time.sleep(0.1)
        raise RedisProcError(f"the cluster did not become ok within {within:.0f} s:\n{self.describe()}")

    def slot_owners(self) -> dict[int, int]:
        """First slot of each range -> port of the master serving it, as a running
        node sees it."""
        running = [n for n in self.nodes if n.running]
        if not running:
            return {}
        owners: dict[int, int] = {}
        for line in command(running[0].port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) < 8 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
            for r in parts[8:]:
                if r.startswith("["):
                    continue  # a slot being migrated
                owners[int(r.split("-", 1)[0])] = port
        return owners

    def _covered(self) -> bool:
        owners = self.slot_owners()
        return bool(owners) and all(_reachable(p) for p in owners.values()) and len(set(owners.values())) >= self.masters

    def master_ports(self) -> list[int]:
        return sorted(set(self.slot_owners().values()))

    def node_on(self, port: int) -> RedisProc:
        return next(n for n in self.nodes if n.port == port)

    def kill_master(self, port: int | None = None, wait: bool = True) -> RedisProc:
        """SIGKILL one master (the first by default); with ``wait``, return once its
        replica serves its slots."""
        victim = self.node_on(port if port is not None else self.master_ports()[0])
        victim.kill()
        if wait:
            deadline = time.monotonic() + FAILOVER_TIMEOUT
            while time.monotonic() < deadline:
                if victim.port not in self.master_ports() and self._covered():
                    self.wait_ok()
                    return victim
                time.sleep(0.1)
            raise RedisProcError(f"no replica took over from {victim.port}:\n{self.describe()}")
        return victim

    def describe(self) -> str:
        for node in self.nodes:
            if node.running:
                return command(node.port, "CLUSTER", "NODES")
        return "(no node running)"

    def close(self) -> None:
        for node in self.nodes:
            node.kill()  # SIGTERM'd, a master waits for its replica's ack (seconds)
            node.close()

    def __enter__(self) -> RedisClusterProc:
        try:
            return self.start()
        except BaseException:
            self.close()  # the nodes started before the failure
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterProc]:
    """A started 3-master, 3-replica Redis Cluster of its own for one test."""
    try:
        cluster = RedisClusterProc()
    except RedisProcError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
