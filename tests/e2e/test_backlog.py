"""A reconnect storm: thousands of clients connect at once, faster than the
event loop accepts them. The listening socket's accept queue holds them
(``LISTEN_BACKLOG``, capped by the kernel's somaxconn) instead of dropping
their SYNs, which would delay each by seconds of retransmission."""

from __future__ import annotations

import concurrent.futures
import socket
from pathlib import Path
from typing import Any

N = 600  # over asyncio's default backlog of 100, under the kernel's somaxconn default (4096)


def connect_all(port: int) -> int:
    """Open N connections, each given 0.5 s; returns how many completed
    before the first that did not."""
    made, ok = [], 0
    try:
        for _ in range(N):
            s = socket.socket()
            s.settimeout(0.5)
            made.append(s)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                break
            ok += 1
    finally:
        for s in made:
            s.close()
    return ok


async def test_a_burst_of_connections_waits_in_the_accept_queue(server: Any) -> None:
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())  # noqa: ASYNC240 (procfs: no I/O wait)
    assert somaxconn >= N, "the kernel's accept queue limit is below this test's burst"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the event loop waits here, blocked: nothing is accepted meanwhile
        connected = pool.submit(connect_all, server.port).result(timeout=60)
    assert connected == N
