"""Calling the points hooks: a hook is sync or async, may raise, hang or return
garbage, and must never slow or break chat.

- ``inline = True`` hooks (the built-in rules: pure and fast) run on the loop;
- async hooks are awaited with a timeout;
- other sync hooks run each call on a daemon thread of their own: one that
  hangs for good is left behind (it cannot hold up the next call, nor the
  process's exit), up to ``MAX_STUCK`` per hook; past that the hook fails until
  one returns.

A call over a batch stops at the first failure: its exception takes that
event's place in the result, and the worker retries from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from ..core.outbox import Event
from .model import Award, hook_name

log = logging.getLogger("chatd.points")

MAX_STUCK = 4  # calls of a sync hook left blocked on their threads before the hook counts as failing


@dataclass
class HookState:
    hook: Any
    name: str
    inline: bool
    is_async: bool
    cursors: dict[str, int] = field(default_factory=dict)  # source -> last processed
    attempts: int = 0
    retry_at: float = 0.0  # monotonic (the clock's)
    failing: str = ""
    lag_ms: int = 0  # age of its oldest pending event at its last read
    stuck: list[threading.Thread] = field(default_factory=list)  # calls that timed out

    @classmethod
    def of(cls, hook: Any) -> HookState:
        is_async = inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)
        return cls(hook, hook_name(hook), bool(getattr(hook, "inline", False)), is_async)


async def call(h: HookState, events: list[Event], limit_s: float) -> list[Any]:
    """The hook over ``events`` in order; stops at the first failure (its
    exception takes that event's place in the result)."""
    if h.inline:
        return _run_all(h.hook, events)
    if h.is_async:
        out: list[Any] = []
        for ev in events:
            try:
                out.append(list(await asyncio.wait_for(h.hook(ev), limit_s)))
            except Exception as exc:
                out.append(exc)
                break
        return out
    h.stuck = [t for t in h.stuck if t.is_alive()]
    if len(h.stuck) >= MAX_STUCK:
        return [RuntimeError(f"{len(h.stuck)} calls of this hook are still blocked")]
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[list[Any]] = loop.create_future()

    def run() -> None:
        try:
            result: list[Any] = _run_all(h.hook, events)
        except BaseException as exc:  # _run_all catches what a hook raises; this is a bug guard
            result = [exc]
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (stopped)
            loop.call_soon_threadsafe(_settle, fut, result)

    thread = threading.Thread(target=run, name=f"chatd-hook-{h.name}", daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.shield(fut), limit_s + 0.01 * len(events))
    except TimeoutError as exc:
        h.stuck.append(thread)
        log.error("points hook %s: a call is blocked past %.1f s; left on its thread", h.name, limit_s)
        return [exc]


def valid(a: Any) -> bool:
    return (
        isinstance(a, Award)
        and a.currency in ("points", "cv")
        and isinstance(a.amount, int)
        and not isinstance(a.amount, bool)
        and a.amount >= 0
        and isinstance(a.key, str)
        and 0 < len(a.key) <= 200
        and isinstance(a.user, str)
        and bool(a.user)
    )


def _settle(fut: asyncio.Future[list[Any]], result: list[Any]) -> None:
    if not fut.done():
        fut.set_result(result)


def _run_all(hook: Any, events: list[Event]) -> list[Any]:
    out: list[Any] = []
    for ev in events:
        try:
            out.append(list(hook(ev)))
        except Exception as exc:
            out.append(exc)
            break
    return out
