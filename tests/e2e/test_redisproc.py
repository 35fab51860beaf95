"""The redis-server test helper: start, kill, restart on the same port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redisproc import RedisProc, RedisProcError


async def ping(url: str) -> bool:
    async with aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as r:
        return bool(await r.ping())


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_start_kill_restart(redis_proc: RedisProc) -> None:
    url, port, pid = redis_proc.url, redis_proc.port, redis_proc.pid
    assert url == f"redis://127.0.0.1:{port}/0"
    assert await ping(url)

    async with aioredis.Redis.from_url(url) as r:
        await r.set("k", "v")
    redis_proc.kill()
    assert not redis_proc.running
    assert refused(port)
    with pytest.raises(RedisConnectionError):
        await ping(url)

    redis_proc.start()  # same port, a new process, empty (nothing persisted)
    assert (redis_proc.port, redis_proc.url) == (port, url)
    assert redis_proc.pid != pid
    assert await ping(url)
    async with aioredis.Redis.from_url(url) as r:
        assert await r.get("k") is None

    redis_proc.stop()  # clean shutdown, then up again
    assert refused(port)
    redis_proc.start()
    assert await ping(url)


async def test_client_reconnects_after_restart(redis_proc: RedisProc) -> None:
    """One redis-py client survives a kill and a restart (what the bus relies on)."""
    async with aioredis.Redis.from_url(redis_proc.url, socket_connect_timeout=1, socket_timeout=1) as r:
        assert await r.ping()
        redis_proc.kill()
        with pytest.raises(RedisConnectionError):
            await r.ping()
        redis_proc.start()
        assert await r.ping()


def test_restart_waits_for_a_busy_port(redis_proc: RedisProc) -> None:
    port = redis_proc.port
    redis_proc.kill()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    timer = threading.Timer(0.5, squatter.close)
    timer.start()
    try:
        started = time.monotonic()
        redis_proc.start()
        assert time.monotonic() - started >= 0.4
    finally:
        timer.cancel()
        squatter.close()
    assert redis_proc.port == port
    assert redis_proc.ping()


def test_a_first_start_whose_cluster_bus_port_was_taken_picks_new_ports() -> None:
    """A cluster node's bus port, free when picked, was handed to another process
    (a node's port, an outgoing connection) before redis bound it: a first start
    picks both ports again instead of retrying the taken one for ever."""
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    proc = RedisProc(extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"), cluster_bus=True)
    proc.cluster_port = taken  # as if picked just before the squatter got it
    try:
        proc.start()
        assert proc.ping() and proc.cluster_port not in (0, taken)
        port, cluster_port = proc.port, proc.cluster_port
        proc.kill()
        proc.start()  # a restart keeps both
        assert (proc.port, proc.cluster_port) == (port, cluster_port) and proc.ping()
    finally:
        proc.close()
        squatter.close()


async def test_cpu_seconds_grows_with_work(redis_proc: RedisProc) -> None:
    before = redis_proc.cpu_seconds()
    assert before >= 0
    async with aioredis.Redis.from_url(redis_proc.url) as r:
        for _ in range(100):  # until a clock tick (10 ms at 100 Hz) is charged to it
            async with r.pipeline(transaction=False) as p:
                for i in range(2000):
                    p.set(f"k{i}", "v" * 100)
                await p.execute()
            if redis_proc.cpu_seconds() > before:
                break
            await asyncio.sleep(0)
    assert redis_proc.cpu_seconds() > before


def test_missing_binary_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RedisProcError, match="install Debian's redis-server package"):
        RedisProc()
