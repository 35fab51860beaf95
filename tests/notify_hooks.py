"""Notification hooks used by the tests (loaded by ``module:attr`` like a deployment's)."""

from __future__ import annotations

import os

from chatd.notify import Notification


class Collect:
    """Keeps every notification it is called with (a push bridge that always works)."""

    name = "collect"
    got: list[Notification] = []

    def __call__(self, note: Notification) -> None:
        type(self).got.append(note)


class Flaky:
    """Raises for its first ``fails`` calls (the push service is down), then keeps them."""

    name = "flaky"
    fails = 0
    calls = 0
    got: list[Notification] = []

    async def __call__(self, note: Notification) -> None:
        type(self).calls += 1
        if type(self).fails > 0:
            type(self).fails -= 1
            raise RuntimeError("push service unavailable")
        type(self).got.append(note)


class FileMarker:
    """For the kill -9 test: appends each notification's key to $CHATD_TEST_NOTIFY
    (a push bridge whose calls the test can count across processes)."""

    name = "file_marker"

    def __call__(self, note: Notification) -> None:
        path = os.environ["CHATD_TEST_NOTIFY"]
        with open(path, "a") as f:
            f.write(note.key + "\n")
