"""Calling hooks: a deployment's code that chatd calls with events it committed
(points hooks, notification hooks). A hook is sync or async, may raise, hang or
return garbage, and must never slow or break chat.

- ``inline = True`` hooks (the built-in rules: pure and fast) run on the loop;
- async hooks are awaited with a timeout;
- other sync hooks run each call on a daemon thread of their own: one that
  hangs for good is left behind (it cannot hold up the next call, nor the
  process's exit), up to ``MAX_STUCK`` per hook; past that the hook fails until
  one returns.

A call over a batch stops at the first failure: its exception takes that
event's place in the result, and the caller retries from there with
:meth:`HookState.failed`'s backoff.

A hook is found by ``module:attr`` (:func:`load_ref`) or by Python entry point
(:func:`entry_point_hooks`); its ``name`` attribute names its cursors in the
store (default ``module:qualname``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from ..clock import Clock

log = logging.getLogger("chatd.hooks")

MAX_STUCK = 4  # calls of a sync hook left blocked on their threads before the hook counts as failing
MAX_ATTEMPTS = 10  # failures of one event before it is recorded and skipped
MAX_BACKOFF = 60.0  # s between retries at most

Shape = Callable[[Any], Any]  # a hook's return value -> what the caller keeps (may raise)


def hook_name(hook: Any) -> str:
    name = getattr(hook, "name", None)
    if isinstance(name, str) and name:
        return name
    target = hook if callable(hook) and hasattr(hook, "__qualname__") else type(hook)
    return f"{target.__module__}:{target.__qualname__}"


def load_ref(ref: str, what: str = "hook") -> Any:
    """``module:attr`` -> the object. A class or factory is called with no
    arguments when the attribute is not itself a hook instance."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"{what} {ref!r}: expected module:attr")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"{what} {ref!r} is not callable")
    return obj


def entry_point_hooks(group: str) -> list[Any]:
    hooks = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
            hooks.append(obj() if isinstance(obj, type) else obj)
        except Exception:
            log.exception("hook entry point %s (%s) failed to load; skipped", ep.name, group)
    return hooks


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

    def failed(self, key: str, clock: Clock) -> bool:
        """Event ``key`` failed once more: True to give up on it (record and skip
        it), else it is retried with exponential backoff (0.5 s .. 60 s)."""
        self.attempts = self.attempts + 1 if self.failing == key else 1
        self.failing = key
        if self.attempts < MAX_ATTEMPTS:
            self.retry_at = clock.monotonic() + min(MAX_BACKOFF, 0.5 * 2 ** (self.attempts - 1))
            return False
        self.attempts, self.failing = 0, ""
        return True

    def succeeded(self, key: str) -> None:
        if self.failing == key:
            self.attempts, self.failing = 0, ""

    async def close(self) -> None:
        """Release what the hook holds (a stream forwarder's Redis client)."""
        close = getattr(self.hook, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:
                log.exception("hook %s failed to close", self.name)


def states(hook_list: Sequence[Any], what: str) -> list[HookState]:
    """One state per hook; their names key their cursors, so they must differ."""
    out = [HookState.of(hook) for hook in hook_list]
    names = [h.name for h in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} hooks need distinct names: {names}")
    return out


async def close_all(hook_states: Sequence[HookState]) -> None:
    for h in hook_states:
        await h.close()


async def call(h: HookState, events: Sequence[Any], limit_s: float, shape: Shape = list) -> list[Any]:
    """The hook over ``events`` in order, each result passed through ``shape``;
    stops at the first failure (its exception takes that event's place)."""
    if h.inline:
        return _run_all(h.hook, events, shape)
    if h.is_async:
        out: list[Any] = []
        for ev in events:
            try:
                out.append(shape(await asyncio.wait_for(h.hook(ev), limit_s)))
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
            result: list[Any] = _run_all(h.hook, events, shape)
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
        log.error("hook %s: a call is blocked past %.1f s; left on its thread", h.name, limit_s)
        return [exc]


def _settle(fut: asyncio.Future[list[Any]], result: list[Any]) -> None:
    if not fut.done():
        fut.set_result(result)


def _run_all(hook: Any, events: Sequence[Any], shape: Shape) -> list[Any]:
    out: list[Any] = []
    for ev in events:
        try:
            out.append(shape(hook(ev)))
        except Exception as exc:
            out.append(exc)
            break
    return out
