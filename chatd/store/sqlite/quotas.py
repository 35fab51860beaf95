"""Per-user quotas over fixed windows, charged inside the write they limit."""

from __future__ import annotations

from chatd_protocol import Err, RequestError

from ..records import Quota
from .engine import Tx


def charge(tx: Tx, quota: Quota, ts: int) -> None:
    """Count one ``quota.action`` for ``quota.user`` at ``ts``; RATE_LIMITED (with
    the time until the window ends) past the limit. Runs in the limited write's
    savepoint: when that write is refused, nothing was charged."""
    window = ts - ts % quota.window_ms
    tx.execute(
        "DELETE FROM quotas WHERE user = ? AND action = ? AND window < ?", (quota.user, quota.action, window)
    )
    (n,) = tx.execute(
        "INSERT INTO quotas VALUES (?, ?, ?, 1) ON CONFLICT(user, action, window) DO UPDATE SET n = n + 1"
        " RETURNING n",
        (quota.user, quota.action, window),
    ).fetchone()
    if n > quota.limit:
        raise RequestError(
            Err.RATE_LIMITED,
            f"at most {quota.limit} {quota.action} per {quota.window_ms // 1000} s",
            retry_after_ms=window + quota.window_ms - ts,
        )
