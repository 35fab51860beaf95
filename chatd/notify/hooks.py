"""The notification hook interface.

A hook is any callable ``hook(notification) -> None`` (or an ``async def``),
with an optional ``name`` attribute (its cursor in the store is kept under that
name; default ``module:qualname``). It gets a
:class:`~chatd.store.records.Notification` and delivers it (an APNs/FCM
bridge); raising means "not delivered, retry". It may be called more than once
for one notification (after a crash, or a retry): it deduplicates on ``key``.
Register one by Python entry point (group ``chatd.notify_hooks``) or with
``chatd serve --notify-hook module:attr``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..core.hooks import entry_point_hooks, load_ref
from ..store.records import Notification
from .stream import NotifyStreamHook

ENTRY_POINT_GROUP = "chatd.notify_hooks"


@runtime_checkable
class NotifyHook(Protocol):
    def __call__(self, notification: Notification) -> Awaitable[None] | None: ...


def load_hooks(refs: Sequence[str], stream: str | None, redis_url: str | None) -> list[Any]:
    """Entry-point hooks, then configured ones, then the Redis stream forwarder
    if asked for. None at all: the worker does not run."""
    hooks: list[Any] = entry_point_hooks(ENTRY_POINT_GROUP)
    hooks += [load_ref(ref, "notification hook") for ref in refs]
    if stream and redis_url:
        hooks.append(NotifyStreamHook.from_url(redis_url, stream))
    return hooks
