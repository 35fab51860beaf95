"""Live Q&A sessions and polls (docs/live-sessions.md).

Anyone signed in may view a session, ask, vote and chat; its hosts and
moderators (``live_roles``, named when it is made) run it; staff whose token
carries the ``exec`` or ``host`` role, and backends on the admin API, make
sessions. Who may do what to a session is decided in the write's transaction
(``chatd/store/sqlite/live.py``); this module turns commits into state
envelopes (``chatd/core/live.py``) and replies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatd_protocol import Err, RequestError, Scope

from ..clock import Clock
from ..core.caller import Caller
from ..core.fanout import Fanout
from ..core.live import SNAPSHOT_LINES, SNAPSHOT_QUESTIONS, LiveHub
from ..kinds import Live
from ..limits import Limiter
from ..store.base import LiveSessions
from ..store.records import LIVE_MODERATORS as MODERATORS
from ..store.records import question_wire
from .base import Args, Commit, Reply

CREATOR_ROLES = frozenset({"exec", "host"})  # staff roles that may make sessions
LINE_MAX = 500  # an audience chat line, in code points
SLOW_MIN_S = 3


def _slow(d: Args) -> None:
    slow = d.get("slow_s")
    if slow is not None and 0 < slow < SLOW_MIN_S:
        raise RequestError(Err.BAD_REQUEST, f"slow_s must be 0 (off) or {SLOW_MIN_S}-120")


class LiveOps:
    def __init__(
        self, commit: Commit, repo: LiveSessions, live: LiveHub, fanout: Fanout, kind: Live, limiter: Limiter,
        clock: Clock, question_max: int = 300,
    ) -> None:
        self.commit = commit
        self.repo = repo
        self.live = live
        self.fanout = fanout
        self.kind = kind
        self.limiter = limiter
        self.clock = clock
        self.question_max = question_max

    @staticmethod
    def _admin(caller: Caller) -> bool:
        return Scope.ADMIN in caller.scopes

    def _publish_questions(self, session: str, rows: list[Any], version: int) -> None:
        self.live.publish(session, {
            "k": "question", "ver": version,
            "rows": [question_wire(r, False) for r in rows], "staff": [question_wire(r, True) for r in rows],
        })

    async def _exists(self, session: str) -> dict[str, Any]:
        info = await self.repo.session(self.kind.session(session))
        if info is None:
            raise RequestError(Err.NOT_FOUND, f"no live session {session}")
        return info

    async def _staff_of(self, caller: Caller, session: str) -> bool:
        if self._admin(caller):
            return True
        return (await self.repo.roles(session)).get(caller.user) in MODERATORS

    # -- sessions -------------------------------------------------------------------

    async def create(self, caller: Caller, d: Args) -> Reply:
        admin = self._admin(caller)
        if not admin and not CREATOR_ROLES & set(caller.identity.roles):
            raise RequestError(Err.FORBIDDEN, "only staff with the exec or host role, or a backend, make sessions")
        _slow(d)
        spec = {k: v for k, v in d.items() if k != "cid"}
        info, dup = await self.commit(self.repo.create(caller.user, d["cid"], spec, not admin, self.clock.wall_ms()))
        return {**info, "dup": dup}

    async def update(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        _slow(d)
        fields = {k: v for k, v in d.items() if k != "session"}
        info = await self.commit(self.repo.update(session, caller.user, self._admin(caller), fields))
        self.live.publish(session, {"k": "session", "ver": info["version"], "info": _public(info),
                                    "roles": info["roles"]})
        return info

    async def state(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        info, changed, followers = await self.commit(
            self.repo.set_state(session, caller.user, self._admin(caller), d["state"], self.clock.wall_ms())
        )
        if changed:
            self.live.publish(session, {"k": "session", "ver": info["version"], "info": _public(info)})
            note = {"session": session, "title": info["title"], "state": info["state"]}
            for user in followers:  # once per session: a follower's sockets, wherever they are
                self.fanout.user_push(user, "live.started", note)
        return {**info, "changed": changed}

    async def listing(self, caller: Caller, d: Args) -> Reply:
        limit = d.get("limit", 50)
        rows = await self.repo.listing(d.get("state"), d.get("after"), limit)
        return {"sessions": [_public(r) for r in rows], "next": rows[-1]["session"] if len(rows) == limit else None}

    async def follow(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        on = d.get("on", True)
        await self.commit(self.repo.follow(session, caller.user, on))
        return {"session": session, "following": on}

    # -- viewing ----------------------------------------------------------------------

    async def join(self, caller: Caller, d: Args) -> Reply:
        if caller.sink is None:
            raise RequestError(Err.BAD_REQUEST, "live.join needs a socket: it streams the session to it")
        session = self.kind.session(d["session"])
        held = self.live.held(session)  # a session with viewers here is read from memory
        info = held.info if held is not None else await self._exists(session)
        if info["state"] in ("ended", "archived"):
            raise RequestError(Err.CONFLICT, f"the session has {info['state']}: read it with live.archive")
        room = d.get("room", "main")
        if room not in info["rooms"]:
            raise RequestError(Err.NOT_FOUND, f"no room {room} in {session}")
        r = await self.live.join(caller.sink, caller.user, session, room, self._admin(caller))
        pinned_id = r.info.get("pinned")
        pinned = r.open.get(pinned_id) or r.answered.get(pinned_id) if pinned_id is not None else None
        (votes, mine, following), polls, lines = await asyncio.gather(
            self.repo.viewer(session, caller.user), self.repo.polls_of(session),
            self.repo.lines(self.kind.room(session, room), SNAPSHOT_LINES),
        )
        return {
            "session": _public(r.info),
            "role": r.roles.get(caller.user),
            "hosts": sorted(u for u, x in r.roles.items() if x == "host"),
            "moderators": sorted(u for u, x in r.roles.items() if x == "moderator"),
            "room": room,
            "version": r.version,
            "questions": r.ranked(SNAPSHOT_QUESTIONS),
            "open_questions": len(r.open),
            "answered": sorted(r.answered.values(), key=lambda q: -q["id"]),
            "pinned": pinned,
            "lines": lines,
            "viewers": self.live.count(session),
            "my_votes": votes,
            "polls": polls,
            "my_polls": {str(k): v for k, v in mine.items()},
            "following": following,
        }

    async def leave(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        return {"session": session, "left": self.live.leave(caller.sink, session) if caller.sink else False}

    # -- questions ------------------------------------------------------------------------

    def _room_of(self, caller: Caller, session: str, d: Args) -> str:
        if "room" in d:
            room: str = d["room"]
            return room
        v = self.live.viewing(caller.sink, session)
        return v.room if v is not None else "main"

    async def ask(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        text = d["text"]
        if len(text) > self.question_max:
            raise RequestError(Err.TOO_LONG, f"a question has at most {self.question_max} characters")
        row, version, dup = await self.commit(self.repo.ask(
            session, self._room_of(caller, session, d), caller.user, _card(caller), d["cid"], text,
            d.get("anonymous", False), self.clock.wall_ms(),
        ))
        if not dup:
            self._publish_questions(session, [row], version)
        return {"question": question_wire(row, True), "dup": dup}

    async def vote(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        on = d.get("on", True)
        votes, version, changed = await self.commit(
            self.repo.vote(session, d["id"], caller.user, on, self.clock.wall_ms())
        )
        if changed:
            self.live.publish(session, {"k": "vote", "q": d["id"], "votes": votes, "ver": version})
        return {"id": d["id"], "votes": votes, "on": on, "changed": changed}

    async def moderate(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        row, version, changed = await self.commit(
            self.repo.moderate(session, d["id"], caller.user, self._admin(caller), d["action"])
        )
        if changed:
            self._publish_questions(session, [row], version)
        return {"question": question_wire(row, True), "changed": changed}

    async def merge(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        dup, into, version, changed = await self.commit(
            self.repo.merge(session, d["id"], d["into"], caller.user, self._admin(caller))
        )
        if changed:
            self._publish_questions(session, [dup, into], version)
        return {"question": question_wire(dup, True), "into": question_wire(into, True), "changed": changed}

    async def answer(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        row, version, changed = await self.commit(self.repo.answer(
            session, d["id"], caller.user, self._admin(caller), d.get("text"), d.get("live", False),
            self.clock.wall_ms(),
        ))
        if changed:
            self._publish_questions(session, [row], version)
        return {"question": question_wire(row, True), "changed": changed}

    async def mark(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        action, admin = d["action"], self._admin(caller)
        if action in ("pin", "unpin"):
            row, version, changed = await self.commit(
                self.repo.pin(session, d["id"], caller.user, admin, action == "pin")
            )
            if changed:
                pinned = question_wire(row, False) if action == "pin" else None
                self.live.publish(session, {"k": "pin", "ver": version, "pinned": pinned and pinned["id"]})
            return {"question": question_wire(row, True), "pinned": action == "pin", "changed": changed}
        row, version, changed = await self.commit(self.repo.moderate(session, d["id"], caller.user, admin, action))
        if changed:
            self._publish_questions(session, [row], version)
        return {"question": question_wire(row, True), "changed": changed}

    async def queue(self, caller: Caller, d: Args) -> Reply:
        info = await self._exists(d["session"])
        session = info["session"]
        if not await self._staff_of(caller, session):
            raise RequestError(Err.FORBIDDEN, "only the session's hosts and moderators see its queue")
        states = (d["state"],) if "state" in d else ("pending", "open")
        limit = d.get("limit", 100)
        rows = await self.repo.questions(session, states, "id", limit, d.get("after", 0))
        out = [question_wire(r, True) for r in rows]
        return {"questions": out, "next": out[-1]["id"] if len(out) == limit else None}

    # -- audience chat --------------------------------------------------------------------

    async def chat(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        text = d["text"]
        if len(text) > LINE_MAX:
            raise RequestError(Err.TOO_LONG, f"a chat line has at most {LINE_MAX} characters")
        wait = self.limiter.wait(caller.user)
        if wait:
            raise RequestError(Err.RATE_LIMITED, "send rate exceeded", retry_after_ms=int(wait * 1000) + 1)
        room = self._room_of(caller, session, d)
        msg = await self.commit(
            self.repo.chat(session, room, caller.user, caller.author, d["cid"], text, self.clock.wall_ms())
        )
        conv = self.kind.room(session, room)
        if msg is None:
            found = await self.repo.line(caller.user, d["cid"])
            return {"conv": found["conv"], "seq": found["seq"], "pos": found["pos"], "ts": found["ts"], "dup": True}
        self.fanout.publish(conv, "msg", msg)
        return {"conv": conv, "seq": msg["seq"], "pos": msg["pos"], "ts": msg["ts"], "dup": False}

    async def mute(self, caller: Caller, d: Args) -> Reply:
        session = self.kind.session(d["session"])
        until = self.clock.wall_ms() + d["seconds"] * 1000 if d["seconds"] else 0
        await self.commit(self.repo.mute(session, caller.user, self._admin(caller), d["user"], until))
        return {"session": session, "user": d["user"], "muted_until": until}

    # -- the archive ----------------------------------------------------------------------

    async def archive(self, caller: Caller, d: Args) -> Reply:
        info = await self._exists(d["session"])
        session = info["session"]
        if info["state"] not in ("ended", "archived"):
            raise RequestError(Err.CONFLICT, f"the session is {info['state']}: its archive is made when it ends")
        rows = await self.repo.questions(session, ("answered",), "id", 100_000)
        figures = await self.repo.figures(session)
        figures["peak_viewers"] = info["peak"]
        return {
            "session": _public(info),
            "answered": [question_wire(r, False) for r in rows],
            "polls": await self.repo.polls_of(session, 1000),
            "figures": figures,
        }

    # -- polls ------------------------------------------------------------------------------

    def _publish_poll(self, poll: dict[str, Any], now: bool) -> None:
        self.live.publish(poll["conv"], {"k": "poll", "poll": poll["poll"], "conv": poll["conv"],
                                         "ver": poll["version"], "results": poll, "now": now})

    async def poll_create(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        if conv.startswith(self.kind.prefix):
            self.kind.session(conv)
        spec = {k: v for k, v in d.items() if k not in ("conv", "cid")}
        poll, _event, dup = await self.commit(self.repo.poll_create(
            conv, caller.user, caller.author, self._admin(caller), d["cid"], spec, self.clock.wall_ms()
        ))
        if not dup:
            self._publish_poll(poll, True)
        return {**poll, "dup": dup}

    async def poll_vote(self, caller: Caller, d: Args) -> Reply:
        poll, weight, changed = await self.commit(
            self.repo.poll_vote(d["poll"], caller.user, caller.identity.type, d["options"], self.clock.wall_ms())
        )
        if changed:
            self._publish_poll(poll, False)
        return {"poll": poll["poll"], "options": sorted(d["options"]), "weight": weight}

    async def poll_close(self, caller: Caller, d: Args) -> Reply:
        poll, changed = await self.commit(
            self.repo.poll_close(d["poll"], caller.user, self._admin(caller), self.clock.wall_ms())
        )
        if changed:
            self._publish_poll(poll, True)
        return {**poll, "changed": changed}

    async def poll_get(self, caller: Caller, d: Args) -> Reply:
        poll = await self.repo.poll(d["poll"])
        if poll is None:
            raise RequestError(Err.NOT_FOUND, f"no poll {d['poll']}")
        if not poll["conv"].startswith(self.kind.prefix) and not self._admin(caller):
            if not await self.repo.member(poll["conv"], caller.user):
                raise RequestError(Err.NOT_FOUND, f"no poll {d['poll']}")  # a circle's poll is its members'
        return poll


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("roles",)}


def _card(caller: Caller) -> dict[str, Any]:
    """What a question shows of its asker: name, type and badges."""
    a = caller.author
    return {"name": a.get("name"), "type": a.get("type"), "badges": a.get("badges", [])}
