"""Logging: text or one JSON object per line, and the lines chatd writes itself.

- one line per connection closed (user, remote address, duration, close code);
- failed authentications, with the reason, rate-limited (a flood of bad tokens
  is one line a second plus a count of what was left out);
- websockets' own INFO lines (one per health check or metrics scrape, one per
  socket opened) are turned down to warnings.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from .clock import Clock

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: structured logs a collector can parse. Fields
    passed with ``extra=`` become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # websockets logs every health check and every socket at INFO: chatd logs
    # what an operator needs itself (connections closed, auth failures)
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))


def banner(fmt: str, text: str, **fields: Any) -> None:
    """The start-up line: on stdout for a person, a JSON line with ``--log-format json``."""
    if fmt == "json":
        record = logging.LogRecord("chatd", logging.INFO, __file__, 0, text, (), None)
        record.__dict__.update(fields)
        print(JsonFormatter().format(record), flush=True)
    else:
        print(text, flush=True)


class Throttled:
    """At most ``per_second`` lines a second; the count of those left out goes
    with the next line written."""

    def __init__(self, log: logging.Logger, clock: Clock, per_second: int = 5) -> None:
        self.log = log
        self.clock = clock
        self.per_second = per_second
        self._second = -1
        self._written = 0
        self.suppressed = 0

    def warning(self, msg: str, *args: Any, **extra: Any) -> None:
        second = int(self.clock.monotonic())
        if second != self._second:
            self._second, self._written = second, 0
        if self._written >= self.per_second:
            self.suppressed += 1
            return
        self._written += 1
        if self.suppressed:
            extra["suppressed"] = self.suppressed
            msg += " (%d more not logged)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.log.warning(msg, *args, extra=extra)
