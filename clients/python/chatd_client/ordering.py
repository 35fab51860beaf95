"""Exactly-once, in-order delivery of messages per conversation (sans-I/O).

The client receives messages from three sources that overlap: ``msg`` pushes,
``sync`` pages after a reconnect, and ``history`` pages that fill gaps. This
class turns that stream into what the application sees: every (conv, seq) once,
in seq order per conversation.

Rules, per conversation:

* the first message seen sets the baseline (``seq`` of that message): nothing
  older is replayed;
* a message with ``seq <= last`` is a duplicate and is dropped;
* ``seq == last + 1`` is delivered, then any buffered successors that are now
  contiguous;
* ``seq > last + 1`` is buffered, and :meth:`gap` reports the missing range so
  the caller can fetch it with ``history`` and :meth:`accept` it; if it can't
  be fetched, :meth:`skip_gap` gives up on it and releases the buffer.

No I/O, no clock: the client drives it (see ``client.py``) and the unit tests
drive it with plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages ``first..last`` (inclusive) of ``conv`` are missing."""

    conv: str
    first: int
    last: int

    @property
    def before(self) -> int:
        """The ``before`` argument of the ``history`` request that ends the gap."""
        return self.last + 1

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class Ordering:
    """Per-conversation dedup and reordering state."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._pending: dict[str, dict[int, Message]] = {}

    def last(self, conv: str) -> int | None:
        """Seq of the last message delivered in ``conv`` (None: nothing yet)."""
        return self._last.get(conv)

    def accept(self, msg: Message, *, rebase: bool = False) -> list[Message]:
        """Offer one message; return the messages to deliver now, in order.

        An empty list means: duplicate, or buffered behind a gap (see :meth:`gap`).
        ``rebase=True`` makes a newer message the new baseline instead of opening a
        gap: the client uses it for the user's own ``join`` event, since what was
        said in a circle between leaving it and joining it again is not the
        user's to catch up on.
        """
        conv, seq = msg["conv"], msg["seq"]
        last = self._last.get(conv)
        if rebase and last is not None and seq > last:
            self._last[conv] = last = seq - 1
        if last is None:
            self._last[conv] = seq
            return [msg, *self._drain(conv)]
        if seq <= last:
            return []
        if seq > last + 1:
            self._pending.setdefault(conv, {}).setdefault(seq, msg)
            return []
        self._last[conv] = seq
        return [msg, *self._drain(conv)]

    def gap(self, conv: str) -> Gap | None:
        """The missing range before the oldest buffered message of ``conv``."""
        pending = self._pending.get(conv)
        last = self._last.get(conv)
        if not pending or last is None:
            return None
        return Gap(conv, last + 1, min(pending) - 1)

    def gaps(self) -> list[Gap]:
        return [g for conv in list(self._pending) if (g := self.gap(conv)) is not None]

    def skip_gap(self, conv: str) -> list[Message]:
        """Give up on the current gap of ``conv``: release what is buffered behind it.

        Used only when ``history`` can't return the missing messages (for example
        the user is no longer a member); with a correct server it never happens.
        """
        pending = self._pending.get(conv)
        if not pending:
            return []
        self._last[conv] = min(pending) - 1
        return self._drain(conv)

    def _drain(self, conv: str) -> list[Message]:
        pending = self._pending.get(conv)
        out: list[Message] = []
        if not pending:
            return out
        last = self._last[conv]
        for seq in sorted(pending):
            if seq <= last:
                del pending[seq]
            elif seq == last + 1:
                out.append(pending.pop(seq))
                last = seq
            else:
                break
        self._last[conv] = last
        if not pending:
            del self._pending[conv]
        return out
