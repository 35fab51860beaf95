"""Logs an operator reads (issue 10, item 13): a line per connection closed, failed
authentications with their reason and no flood of them, no line per health check,
and with ``--log-format json`` nothing but JSON lines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, free_port, healthz, http_get, token, url
from wsclient import WsClient


async def test_a_line_per_connection_closed(server: Any, clients: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chatd.session")
    c = await clients(server, "alice")
    await c.call("ping")
    await c.close()
    for _ in range(50):
        closed = [r for r in caplog.records if r.getMessage().startswith("connection closed")]
        if closed:
            break
        await asyncio.sleep(0.02)
    (record,) = closed
    assert record.user == "alice" and record.code == 1000  # type: ignore[attr-defined]
    assert record.remote.startswith("127.0.0.1:") and record.duration_s >= 0  # type: ignore[attr-defined]


async def test_failed_authentications_are_logged_with_the_reason_a_few_a_second(
    server: Any, clients: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatd.auth")
    for i in range(30):
        c = await clients(server, None)
        await c.send_frame({"id": 1, "op": "auth", "d": {"token": f"forged.{i}.token"}})
        assert await c.closed() == 4101
    lines = [r for r in caplog.records if r.name == "chatd.auth"]
    assert lines and "invalid token" in lines[0].getMessage() and lines[0].code == 4101  # type: ignore[attr-defined]
    assert len(lines) < 30  # a flood of forgeries is not a flood of lines
    expired = await clients(server, None)
    await expired.send_frame({"id": 1, "op": "auth", "d": {"token": token("bob", ttl=-10)}})
    assert await expired.closed() == 4102


def serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "chatd", "serve", "--port", str(port), "--db", str(tmp_path / "c.db"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    return p, port


async def wait_healthy(p: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 20
    while not await healthz(port):
        assert p.poll() is None and time.monotonic() < deadline, "chatd did not come up"
        await asyncio.sleep(0.05)


async def test_health_checks_are_not_logged_and_json_means_only_json(tmp_path: Path) -> None:
    p, port = serve(tmp_path, "--log-format", "json", "--log-level", "info")
    try:
        await wait_healthy(p, port)
        for _ in range(5):
            assert (await http_get(port, "/healthz"))[0] == 200
            assert (await http_get(port, "/metrics"))[0] == 200
    finally:
        p.terminate()
        out, err = p.communicate(timeout=20)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert lines, "nothing was logged"
    parsed = [json.loads(line) for line in lines]  # every line, the banner included, is JSON
    banner = next(d for d in parsed if "serving" in d["msg"])
    assert banner["url"] == f"ws://127.0.0.1:{port}/" and banner["version"]
    assert not [d for d in parsed if "rejected" in d["msg"] or "connection open" in d["msg"]]
    assert any(d["msg"] == "chatd stopped" for d in parsed)


async def test_the_development_secret_is_warned_about_at_start(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatd.app")
    await make_server()
    assert any("development secret" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    await make_server(secret="s" * 32, port=0)
    assert not any("development secret" in r.getMessage() for r in caplog.records)


async def _closed_remote(app: Any, caplog: pytest.LogCaptureFixture, **headers: str) -> str:
    caplog.clear()
    c = await WsClient.connect(url(app), "msgpack", additional_headers=headers)
    await c.auth(token("alice"))
    await c.close()
    for _ in range(100):
        closed = [r for r in caplog.records if r.getMessage().startswith("connection closed")]
        if closed:
            return str(closed[0].remote)  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)
    raise AssertionError("no connection closed line")


async def test_a_trusted_proxy_names_the_client(make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chatd.session")
    plain = await make_server()
    # an untrusted peer's header is ignored
    assert (await _closed_remote(plain, caplog, **{"X-Forwarded-For": "203.0.113.7"})).startswith("127.0.0.1:")
    behind = await make_server(trusted_proxies=("127.0.0.0/8", "::1"))
    assert await _closed_remote(behind, caplog, **{"X-Forwarded-For": "203.0.113.7"}) == "203.0.113.7"
    # what the client wrote itself (left of the proxy's entry) proves nothing
    assert await _closed_remote(behind, caplog, **{"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}) == "203.0.113.7"
    # garbage or no header: the proxy's own address
    assert (await _closed_remote(behind, caplog, **{"X-Forwarded-For": "<script>"})).startswith("127.0.0.1:")
    assert (await _closed_remote(behind, caplog)).startswith("127.0.0.1:")


def test_trusted_proxies_refuse_garbage() -> None:
    from chatd.settings import SettingError, resolve, to_config

    for bad in ("not-an-ip", "10.0.0.0/99", "300.1.1.1"):
        with pytest.raises(ValueError, match="trusted_proxies"):
            to_config(resolve({}, None, {"CHATD_TRUSTED_PROXIES": bad}))
    with pytest.raises(SettingError, match="trusted_proxies"):
        resolve({}, {"trusted_proxies": [1]}, {})
    with pytest.raises(SettingError, match="trusted_proxies"):
        resolve({}, {"trusted_proxies": "x" * 300}, {})
    assert to_config(resolve({}, None, {"CHATD_TRUSTED_PROXIES": "10.0.0.1, fd00::/8"})).trusted_proxies == (
        "10.0.0.1", "fd00::/8"
    )
