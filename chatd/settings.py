"""Every setting of ``chatd serve``, in one table, read from four places.

Precedence, lowest first: the built-in default, the TOML file given with
``--config``, the environment (``CHATD_<KEY>``, the key upper-cased), the
command-line flag. A TOML file is flat: the same keys as the table below (see
docs/operations.md for an example). Each value is checked once, with the same
rule wherever it came from, and a bad one is refused with a message naming its
key and where it came from (``chatd check-config FILE`` runs the same checks).
"""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import Config

ENV_PREFIX = "CHATD_"


class SettingError(ValueError):
    """A setting's value is refused; the message names the key and its source."""


Parse = Callable[[Any], Any]


def _int(lo: int, hi: int = 2**31 - 1) -> Parse:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError("must be a whole number")
        if isinstance(v, str):
            v = v.strip()
            if not v.lstrip("-").isdigit():
                raise ValueError("must be a whole number")
            v = int(v)
        if not isinstance(v, int):
            raise ValueError("must be a whole number")
        if not lo <= v <= hi:
            raise ValueError(f"must be in [{lo}, {hi}]")
        return v

    return parse


def _float(lo: float, hi: float = 1e9, *, open_low: bool = False) -> Parse:
    def parse(v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise ValueError("must be a number") from None
        if not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError("must be a number")
        if v < lo or v > hi or (open_low and v == lo):
            raise ValueError(f"must be {'over' if open_low else 'at least'} {lo:g} and at most {hi:g}")
        return float(v)

    return parse


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _str(max_len: int = 4096, *, empty_is_none: bool = False) -> Parse:
    def parse(v: Any) -> str | None:
        if not isinstance(v, str):
            raise ValueError("must be a string")
        if len(v) > max_len:
            raise ValueError(f"must have at most {max_len} characters")
        if "\x00" in v:
            raise ValueError("must not hold a NUL character")
        if empty_is_none and not v:
            return None
        return v

    return parse


def _choice(*choices: str) -> Parse:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v.strip().lower() not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return v.strip().lower()

    return parse


def _list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [p for p in (s.strip() for s in v.split(",")) if p]
    if not isinstance(v, list) or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in v) or len(v) > 64:
        raise ValueError("must be a list of up to 64 strings")
    return tuple(v)


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # TOML key, flag (--key-with-dashes), env CHATD_KEY
    parse: Parse
    default: Any
    help: str
    field: str | None = None  # the Config field (None: the key); "" for a process setting not in Config
    to_config: Callable[[Any], Any] = lambda v: v  # unit conversion (seconds -> ms)
    flag: str | None = None  # a flag other than --<key> (e.g. --no-points)
    metavar: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


D = Config()  # the defaults come from Config, so tests and the CLI agree
S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("host", _str(255), D.host, "address to listen on"),
    S("port", _int(0, 65535), D.port, "port to listen on (0: any free one)"),
    S("db", _str(), D.db_path, "the store: a SQLite file (created if missing), or sqlite:PATH", field="db_path"),
    S("secret", _str(4096, empty_is_none=True), None, "token signing secret; required off loopback"),
    S("token_public_key", _str(4096, empty_is_none=True), None, "PEM public key: accept RS256/EdDSA tokens it signed"),
    S("token_jwks", _str(4096, empty_is_none=True), None, "JWKS file of public keys, chosen by the token's kid"),
    S("token_algorithms", _list, (), "accepted token algorithms (HS256, RS256, EdDSA); none: those with a key"),
    S("sync", _choice("full", "normal"), D.sync, "SQLite synchronous mode: full fsyncs every commit"),
    S("max_text", _int(1, 60_000), D.max_text, "message text limit, in code points"),
    S("max_frame", _int(1024, 16 << 20), D.max_frame, "WebSocket frame limit in bytes (larger: close 1009)"),
    S("send_rate", _float(0, 1e6, open_low=True), D.send_rate, "messages per second per user, sustained"),
    S("send_burst", _int(1, 10**6), D.send_burst, "messages per user in a burst"),
    S("request_rate", _float(0, 1e6, open_low=True), D.request_rate, "requests per second per socket"),
    S("request_burst", _int(1, 10**6), D.request_burst, "requests per socket in a burst"),
    S("flood_strikes", _int(1, 10**6), D.flood_strikes, "rate_limited refusals in a row before close 4202"),
    S("auth_timeout", _float(0, 3600, open_low=True), D.auth_timeout, "seconds a socket has to authenticate"),
    S("out_buffer", _int(4096, 1 << 30), D.out_buffer, "bytes queued to one socket before it is closed 4001"),
    S("recall_window", _int(0, 30 * 86400), D.recall_window_s, "seconds a sender may recall a message",
      field="recall_window_s"),
    S("live_attend", _int(1, 86400), D.live_attend_s, "seconds a live viewer watches before attendance counts",
      field="live_attend_s"),
    S("live_question_max", _int(1, 2000), D.live_question_max, "a live question's length limit, in code points"),
    S("drain_timeout", _float(0, 600), D.drain_timeout, "seconds to answer and flush at shutdown"),
    S("ping_interval", _float(0, 3600), D.ping_interval or 0, "seconds between keepalive pings (0: none)",
      to_config=lambda v: v or None),
    S("redis_url", _str(1024, empty_is_none=True), None, "Redis for fan-out and presence across processes"),
    S("bus_shards", _int(1, 65536), D.bus_shards, "pub/sub channels per key family"),
    S("reuse_port", _bool, D.reuse_port, "bind with SO_REUSEPORT (separate processes on one port)"),
    S("workers", _int(1, 256), 1, "processes sharing the port (needs redis_url)", field=""),
    S("presence_lease", _float(0.3, 3600), D.presence_lease_ms / 1000,
      "seconds without heartbeat before a node's users go offline", field="presence_lease_ms",
      to_config=lambda v: int(v * 1000)),
    S("points", _bool, D.points, "run the points hooks (events are recorded either way)", flag="--no-points"),
    S("points_hook", _list, (), "extra points hooks, module:attr (repeatable)", field="points_hooks"),
    S("points_rules", _str(4096, empty_is_none=True), None, "TOML file of points rules replacing the defaults"),
    S("service_policy", _str(4096, empty_is_none=True), None,
      "TOML file of the service groups' response clocks, escalation and ratings (docs/service-groups.md)"),
    S("points_stream", _str(256, empty_is_none=True), None, "also forward every event to this Redis stream"),
    S("points_yield_ms", _int(0, 60_000), D.points_yield_ms, "ms the points worker pauses while chat writes wait"),
    S("red_packet_ttl", _int(1, 30 * 86400), D.red_packet_ttl_s, "seconds until an unclaimed red packet is refunded",
      field="red_packet_ttl_s"),
    S("hook_timeout", _float(0, 3600, open_low=True), D.hook_timeout_s, "seconds a points hook call may take",
      field="hook_timeout_s"),
    S("notify_hook", _list, (), "offline notification hooks, module:attr (repeatable; none: no notifications)",
      field="notify_hooks"),
    S("notify_stream", _str(256, empty_is_none=True), None, "also forward every notification to this Redis stream"),
    S("notify_coalesce", _int(0, 86_400), D.notify_coalesce_s,
      "seconds: at most one notification per user and conversation this often (0: every message)",
      field="notify_coalesce_s"),
    S("dm_unknown_users", _bool, D.dm_unknown_users, "open DMs to user ids this server never saw",
      flag="--allow-dm-to-unknown-users"),
    S("circles_per_hour", _int(0, 10**6), D.circles_per_hour, "circles a user may create per hour (0: no limit)"),
    S("new_dms_per_hour", _int(0, 10**6), D.new_dms_per_hour, "new DMs a user may open per hour (0: no limit)"),
    S("admin_port", _int(0, 65535), None, "port of the admin API's HTTP listener (none: off; 0: any free one)"),
    S("admin_host", _str(255), D.admin_host, "address the admin API listens on (loopback unless you mean it)"),
    S("admin_max_body", _int(1024, 64 << 20), D.admin_max_body, "bytes an admin request body may have (larger: 413)"),
    S("trusted_proxies", _list, (), "reverse proxies (IPs or CIDR) whose X-Forwarded-For names the client in logs"),
    S("log_level", _choice("debug", "info", "warning", "error"), "info", "log level", field=""),
    S("log_format", _choice("text", "json"), "text", "text, or one JSON object per line", field=""),
)
BY_KEY = {s.key: s for s in SETTINGS}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, with its default and description in ``--help``; the
    parsed default is None, so a flag given can be told from one left out."""
    for s in SETTINGS:
        shown = "on" if s.default is True else "off" if s.default is False else s.default
        text = f"{s.help} [{s.env}; default: {shown if shown not in (None, ()) else 'none'}]"
        if s.parse is _bool:
            value = not s.default if s.flag else True
            parser.add_argument(s.option, dest=s.key, action="store_const", const=value, default=None, help=text)
        elif s.parse is _list:
            parser.add_argument(s.option, dest=s.key, action="append", default=None, help=text, metavar="REF")
        else:
            parser.add_argument(s.option, dest=s.key, default=None, help=text, metavar=s.metavar or s.key.upper())


def load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise SettingError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"--config {path}: not TOML: {exc}") from None
    unknown = sorted(set(doc) - BY_KEY.keys())
    if unknown:
        raise SettingError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    return doc


def resolve(
    flags: Mapping[str, Any], file: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every setting's value (parsed and checked) from the four sources."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    for s in SETTINGS:
        raw: Any = s.default
        source = "default"
        if file is not None and s.key in file:
            raw, source = file[s.key], "the config file"
        if s.env in env:
            raw, source = env[s.env], f"${s.env}"
        if flags.get(s.key) is not None:
            raw, source = flags[s.key], s.option
        if source == "default":
            out[s.key] = raw
            continue
        try:
            out[s.key] = s.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{s.key} (from {source}) {exc}") from None
    return out


def to_config(values: Mapping[str, Any]) -> Config:
    kwargs = {}
    for s in SETTINGS:
        if s.field == "":
            continue
        kwargs[s.field or s.key] = s.to_config(values[s.key])
    config = Config(**kwargs)
    config.check()
    return config
