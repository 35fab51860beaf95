"""Corked socket output: while corked, frames for a socket collect in its
``pending`` list; ``uncork`` hands each socket's frames to its transport in one
write. The pipeline corks around each batch's commit callbacks, so the acks and
pushes one batch produces for one socket cost one syscall, not one each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conn import Conn


class Output:
    __slots__ = ("corked", "dirty")

    def __init__(self) -> None:
        self.corked = False
        self.dirty: list[Conn] = []

    def cork(self) -> None:
        self.corked = True

    def uncork(self) -> None:
        self.corked = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()
