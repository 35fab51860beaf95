"""``live``: an executive's Q&A session (docs/live-sessions.md). Its audience are
viewers held in memory, not stored members; a viewer gets a snapshot on joining
and live updates after, never a replay.

Ids: a session is ``l:<n>``; its rooms (the main venue and sub-venues, each with
its own audience chat) are the conversations ``l:<n>.<room>``; the pushes only
its hosts and moderators see go to the topic ``l:<n>:staff``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from chatd_protocol import Err, RequestError

from ..store.records import Effect
from .base import ConversationKind, Delivery, Membership

SESSION_RE = re.compile(r"^l:[1-9][0-9]{0,15}$")


class Live(ConversationKind):
    name = "live"
    prefix = "l:"
    membership: ClassVar[Membership] = Membership.EPHEMERAL
    delivery: ClassVar[Delivery] = Delivery.SNAPSHOT_THEN_TOPIC
    public: ClassVar[bool] = True  # sessions are listed (live.list)
    append_effects: tuple[Effect, ...] = ()  # viewers keep no read cursors
    typing_max: ClassVar[int | None] = 0  # no typing in an audience

    @staticmethod
    def session(sid: str) -> str:
        """``sid`` if it is a session id, else NOT_FOUND (a room's or another
        kind's id names no session)."""
        if not SESSION_RE.fullmatch(sid):
            raise RequestError(Err.NOT_FOUND, f"no live session {sid}")
        return sid

    @staticmethod
    def room(session: str, room: str) -> str:
        return f"{session}.{room}"

    @staticmethod
    def staff_topic(session: str) -> str:
        return f"{session}:staff"
