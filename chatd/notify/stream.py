"""A built-in notification hook that forwards every notification to a Redis
stream, for a push service elsewhere: ``XADD <stream> MAXLEN ~ 1000000 * key ..
user .. conv .. reason .. count .. preview .. silent ..``. At least once: a
consumer deduplicates on ``key``."""

from __future__ import annotations

from typing import Any

from ..points.stream import StreamHook
from ..store.records import Notification


class NotifyStreamHook(StreamHook):
    """Built with ``NotifyStreamHook.from_url(redis_url, stream)``."""

    def fields(self, event: Any) -> dict[Any, Any]:
        note: Notification = event
        return {k: int(v) if isinstance(v, bool) else v for k, v in note.wire().items()}
