"""Points hooks used by the tests (loaded by ``module:attr`` like a deployment's)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from chatd.points import Award, Event


class Flaky:
    """Raises for its first ``fails`` calls, then awards 1 point per event."""

    name = "flaky"
    fails = 0
    calls = 0

    def __call__(self, event: Event) -> list[Award]:
        type(self).calls += 1
        if type(self).fails > 0:
            type(self).fails -= 1
            raise RuntimeError("points service unavailable")
        return [Award(event.user, "points", 1, "flaky", f"flaky:{event.key}")]


class Hang:
    """Blocks its thread until released (a hook that hangs)."""

    name = "hang"
    release = threading.Event()
    calls = 0

    def __call__(self, event: Event) -> list[Award]:
        type(self).calls += 1
        type(self).release.wait(60)
        return []


class HangOnce:
    """Blocks its thread for good on its first call, then awards 1 point per event
    (a hook whose call into a service hung once)."""

    name = "hang_once"
    calls = 0
    stuck = threading.Event()  # set by the test's teardown to let the thread go

    def __call__(self, event: Event) -> list[Award]:
        type(self).calls += 1
        if type(self).calls == 1:
            type(self).stuck.wait(60)
        return [Award(event.user, "points", 1, "hang_once", f"hang_once:{event.key}")]


class SlowAsync:
    name = "slow_async"

    async def __call__(self, event: Event) -> list[Award]:
        await asyncio.sleep(3600)
        return []


class Bogus:
    """Returns an invalid award (negative amount): a hook bug."""

    name = "bogus"

    def __call__(self, event: Event) -> list[Award]:
        return [Award(event.user, "points", -5, "bogus", f"bogus:{event.key}")]


class Marker:
    """For the kill -9 test: awards 7 points per message and appends the event key
    to $CHATD_TEST_MARKER before returning (so the test sees the hook ran)."""

    name = "marker"

    def __call__(self, event: Event) -> list[Award]:
        path = os.environ.get("CHATD_TEST_MARKER")
        if path:
            with Path(path).open("a") as f:
                f.write(event.key + "\n")
        if event.kind != "message.sent":
            return []
        return [Award(event.user, "points", 7, "marker", f"marker:{event.key}")]
