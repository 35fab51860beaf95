"""Settings (chatd/settings.py; issue 10, items 11 and 12): one table, four
sources with one precedence, every value checked wherever it came from, and the
``chatd`` command's own start-up failures as one clear line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import ROOT

from chatd import settings
from chatd.cli import chatd_version
from chatd.settings import SETTINGS, SettingError, resolve, to_config


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_precedence_default_file_environment_flag() -> None:
    assert resolve({}, {}, {})["port"] == 8765
    assert resolve({}, {"port": 9001}, {})["port"] == 9001
    assert resolve({}, {"port": 9001}, {"CHATD_PORT": "9002"})["port"] == 9002
    assert resolve({"port": "9003"}, {"port": 9001}, {"CHATD_PORT": "9002"})["port"] == 9003
    config = to_config(resolve({"presence_lease": "2.5", "ping_interval": "0"}, {"db": "x.db"}, {}))
    assert (config.presence_lease_ms, config.ping_interval, config.db_path) == (2500, None, "x.db")


def test_the_legacy_environment_names_still_work() -> None:
    values = resolve({}, None, {"CHATD_SECRET": "s3cret", "CHATD_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert (values["secret"], values["redis_url"]) == ("s3cret", "redis://127.0.0.1:1/0")


GARBAGE: dict[Any, list[Any]] = {
    "int": ["ten", "1.5", "", [1], True, 2**63, "-99999999999"],
    "float": ["fast", "nan", "inf", "", [1], True, 1e300],
    "bool": ["maybe", 2, [True], ""],
    "str": [5, ["x"], "x" * 70_000, "a\x00b"],
    "choice": ["sometimes", 1, ""],
    "list": [5, [1, 2], ["x" * 300]],
}


def kind_of(s: settings.Setting) -> str:
    name = getattr(s.parse, "__qualname__", "")
    for kind in ("_int", "_float", "_bool", "_str", "_choice", "_list"):
        if name.startswith(kind):
            return kind[1:]
    raise AssertionError(name)


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.key for s in SETTINGS])
def test_every_setting_refuses_garbage_from_every_source(setting: settings.Setting) -> None:
    for bad in GARBAGE[kind_of(setting)]:
        if isinstance(bad, str):
            with pytest.raises(SettingError, match=setting.key):
                resolve({}, None, {setting.env: bad})
            with pytest.raises(SettingError, match=setting.option):
                resolve({setting.key: bad}, None, {})
        with pytest.raises(SettingError, match="config file"):
            resolve({}, {setting.key: bad}, {})


def test_a_config_file_is_checked_as_a_whole(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('port = 9000\nsync = "normal"\npoints_hook = ["a:b"]\n')
    assert settings.load_file(str(good)) == {"port": 9000, "sync": "normal", "points_hook": ["a:b"]}
    for text, why in (("port = ", "not TOML"), ("prot = 1", "unknown setting"), ("[x]\ny=1", "unknown setting")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(SettingError, match=why):
            settings.load_file(str(bad))
    with pytest.raises(SettingError, match="No such file"):
        settings.load_file(str(tmp_path / "missing.toml"))


def test_check_config_and_serve_refuse_a_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "chatd.toml"
    good.write_text('host = "127.0.0.1"\nport = 0\ndb = "x.db"\nlog_format = "json"\n')
    out = run("check-config", str(good))
    assert out.returncode == 0 and "is valid" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('port = "eighty"\n')
    for args in (("check-config", str(bad)), ("serve", "--config", str(bad))):
        out = run(*args)
        assert out.returncode == 2 and "port (from the config file) must be a whole number" in out.stderr, out
        assert "Traceback" not in out.stderr
    off_loopback = tmp_path / "public.toml"
    off_loopback.write_text('host = "0.0.0.0"\n')  # the development secret stays on loopback
    out = run("check-config", str(off_loopback))
    assert out.returncode == 2 and "secret" in out.stderr


def test_a_bad_service_policy_file_does_not_start(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("[service]\nfirst_response_s = -5\n")
    conf = tmp_path / "chatd.toml"
    conf.write_text(f'service_policy = "{bad}"\n')
    for args in (("check-config", str(conf)), ("serve", "--service-policy", str(bad))):
        out = run(*args)
        assert out.returncode == 2 and "service.first_response_s must be an integer" in out.stderr, out
        assert "Traceback" not in out.stderr


def test_help_shows_every_flag_with_its_default_and_the_version() -> None:
    out = run("serve", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for s in SETTINGS:
        assert s.option in text, s.key
        assert s.env in text, s.key
    assert "default: 8765" in text and "default: full" in text
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"chatd {chatd_version()}"


def test_a_port_in_use_exits_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run("serve", "--port", str(port), "--db", str(tmp_path / "x.db"), timeout=20)
    assert out.returncode == 1
    assert out.stderr.strip() == f"chatd: cannot start: cannot listen on 127.0.0.1:{port}: the address is in use"


@pytest.mark.parametrize("db", ["/nonexistent/dir/chatd.db", "/"])
def test_a_store_that_cannot_open_exits_at_once_with_one_line(db: str) -> None:
    out = run("serve", "--port", "0", "--db", db, "--log-level", "warning", timeout=20)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"chatd: cannot start: cannot open the store {db}")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--workers", "2"], "redis_url"),
        (["--redis-url", "http://x"], "redis"),
        (["--redis-url", "redis+cluster://"], "cluster seed has no host"),
        (["--redis-url", "redis+cluster://h:1,:2"], "cluster seed has no host"),
        (["--redis-url", "redis+cluster://h:port"], "port must be 1-65535"),
        (["--redis-url", "redis+cluster://h:70000"], "port must be 1-65535"),
        (["--redis-url", "redis+cluster://" + ",".join(f"h{i}:1" for i in range(65))], "at most 64 cluster seeds"),
        (["--redis-url", "redis+cluster://h:-1"], "port must be 1-65535"),
        (["--host", "10.1.2.3"], "development secret"),
        (["--port", "70000"], "port"),
        (["--points-stream", "s"], "points-stream needs"),
        (["--admin-port", "9100", "--port", "9100"], "--admin-port must differ"),
        (["--admin-port", "0", "--admin-host", "10.1.2.3"], "admin API"),
        (["--admin-port", "0", "--workers", "2", "--port", "9100", "--redis-url", "redis://127.0.0.1:1/0"],
         "fixed admin_port"),
        (["--admin-port", "port"], "admin_port"),
        (["--admin-max-body", "10"], "admin_max_body"),
        (["--service-policy", "/nonexistent/policy.toml"], "cannot read /nonexistent/policy.toml"),
    ],
)
def test_configuration_that_must_not_start_exits_2(args: list[str], why: str) -> None:
    out = run("serve", *args)
    assert out.returncode == 2 and why in out.stderr, out


def test_a_bus_prefix_with_a_brace_is_refused_on_a_cluster_only() -> None:
    from chatd.config import Config

    with pytest.raises(ValueError, match="brace"):
        Config(redis_url="redis+cluster://127.0.0.1:7000", bus_prefix="chat{d}").check()
    Config(redis_url="redis://127.0.0.1:7000", bus_prefix="chat{d}").check()  # one server: any prefix
