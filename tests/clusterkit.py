"""Redis Cluster helpers for tests (on ``redisclusterproc.RedisClusterProc``): a
cluster shared by every test of a run that leaves it as it found it (``shared_cluster``;
``redis_at`` runs a test on one redis-server and on that cluster; import the
fixtures into the module),
the master serving a key, names that land one on each master, and waiting until
the replicas hold what the masters were sent (before a test kills one)."""

from __future__ import annotations

import secrets
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator

import pytest
from redisclusterproc import RedisClusterProc, command
from redisproc import RedisProcError

from chatd.redisurl import slot


def owner(cluster: RedisClusterProc, key: str) -> int:
    """The port of the master serving ``key``'s slot."""
    ranges = sorted(cluster.slot_owners().items())
    return ranges[bisect_right([first for first, _ in ranges], slot(key)) - 1][1]


def one_per_master(cluster: RedisClusterProc, key: Callable[[str], str], stem: str = "u") -> dict[int, str]:
    """Master port -> the first name ``<stem><i>`` whose ``key(name)`` that master serves."""
    found: dict[int, str] = {}
    masters = set(cluster.master_ports())
    i = 0
    while set(found) != masters:
        name = f"{stem}{i}"
        found.setdefault(owner(cluster, key(name)), name)
        i += 1
    return found


def replicated(cluster: RedisClusterProc, within: float = 15.0) -> None:
    """Until every master's replicas have applied its whole replication stream (as
    the replicas report it: the masters learn it only from the next once-a-second
    acknowledgement)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(_caught_up(port) for port in cluster.master_ports()):
            return
        time.sleep(0.02)
    raise AssertionError("the replicas did not catch up")


def _info(port: int) -> dict[str, str]:
    out = command(port, "INFO", "replication")
    return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


def _caught_up(master: int) -> bool:
    fields = _info(master)
    offset = int(fields["master_repl_offset"])
    ports = [  # from the master's "slave<n>:ip=..,port=..,..." lines
        dict(kv.split("=", 1) for kv in v.split(","))["port"]
        for k, v in fields.items()
        if k[:5] == "slave" and k[5:].isdigit()
    ]
    replicas = [_info(int(port)) for port in ports]
    # up: past the first full sync (which starts up to 5 s after the replica asks:
    # redis-server's repl-diskless-sync-delay)
    return bool(replicas) and all(
        r.get("master_link_status") == "up" and int(r.get("slave_repl_offset", -1)) >= offset for r in replicas
    )


@pytest.fixture(scope="session")
def session_cluster() -> Iterator[RedisClusterProc]:
    """The one cluster of a test run for tests that neither kill nor restart a node
    nor move a slot (imported by tests/conftest.py; tests take ``shared_cluster``).
    Started when the first such test needs it (~2 s) and killed at the end of the run."""
    try:
        cluster = RedisClusterProc()
    except RedisProcError as exc:
        pytest.fail(str(exc), pytrace=False)
    with cluster:  # started; closed (directories removed) at the end
        try:
            yield cluster
        finally:
            # SIGKILL first: nothing is kept, and a master stopped with SIGTERM
            # waits for its replicas' next acknowledgement (~1 s each after writes)
            for node in cluster.nodes:
                node.kill()


@pytest.fixture
def shared_cluster(session_cluster: RedisClusterProc) -> RedisClusterProc:
    """The run's cluster (``session_cluster``; ``redis_cluster`` is one of a test's
    own). Each test keeps to keys and bus channels of its own (``fresh_prefix``);
    a test that left a node dead fails the next one here, not somewhere obscure."""
    dead = [n.port for n in session_cluster.nodes if not n.running]
    assert not dead, f"a test killed node(s) {dead} of the shared cluster: it needs redis_cluster"
    return session_cluster


def fresh_prefix() -> str:
    """A key prefix no other test on a shared cluster uses."""
    return "t" + secrets.token_hex(4)


def where(request: pytest.FixtureRequest, kind: str) -> tuple[str, str]:
    """(URL, key prefix) for ``kind`` "redis" (this test's redis-server, prefix
    "t") or "cluster" (the run's ``shared_cluster``, a prefix of this test's
    own)."""
    if kind == "redis":
        return request.getfixturevalue("redis_proc").url, "t"
    return request.getfixturevalue("shared_cluster").url, fresh_prefix()


@pytest.fixture(params=["redis", "cluster"])
def redis_at(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A test once on one redis-server and once on the run's cluster: ``where``."""
    return where(request, request.param)
