"""Live sessions on this process (docs/live-sessions.md): viewers, the
question ranking, coalesced pushes, viewer counts and attendance.

Viewers are sockets following a session's topics in the hub (``l:<n>``, the
room ``l:<n>.<room>``, and ``l:<n>:staff`` for hosts and moderators); nothing
is stored per viewer. Joining and leaving are set operations: no other viewer
is told.

Every change to a session's questions is one **state envelope** on the
session's bus channel (``OP_STATE``), so one change costs one Redis publish
whatever the audience. Each process with viewers applies it to its own copy of
the session (:class:`Room`): a question's change is pushed to the local
viewers at once (``live.question``; the version with the asker, ``live.mod``,
to the staff topic), a vote only marks the question dirty, and one shared
timer pushes each dirty session's ``live.rank`` (only the changed counts) at
most every ``RANK_EVERY``. Every envelope carries the session's version from
the transaction that made it, so a process applies a question's newest count
whatever order envelopes arrive in, and the last push after a storm equals the
stored ranking.

Once a second the same timer sums the viewer counts over every process (a
hash per session in Redis, a field per process, with a TTL so a dead process's
viewers drop out) and pushes ``live.viewers`` when the sum changed; raises the
stored peak; writes the attendance of viewers who have watched long enough, in
one batch; and pushes coalesced poll results.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
from chatd_protocol import Err, RequestError

from .. import redisurl
from ..clock import Clock, Timer
from ..store import StoreUnavailable
from ..store.base import LiveSessions
from ..store.records import LIVE_MODERATORS, question_wire
from .fanout import Fanout
from .hub import Hub, Sink
from .pipeline import Pipeline

log = logging.getLogger("chatd.live")

RANK_EVERY = 0.25  # s: at most 4 ranking pushes a second per session
COUNT_EVERY = 1.0  # s: viewer counts, attendance, poll results
SNAPSHOT_QUESTIONS = 50
SNAPSHOT_ANSWERED = 50
SNAPSHOT_LINES = 50
MAX_SESSIONS_PER_SOCKET = 4
COUNT_TTL_MS = 3000


class Counter(Protocol):
    """Viewer counts summed over processes (Redis), or this process's alone."""

    async def sum(self, counts: dict[str, int]) -> dict[str, int]: ...

    async def close(self) -> None: ...


class LocalCounter:
    async def sum(self, counts: dict[str, int]) -> dict[str, int]:
        return dict(counts)

    async def close(self) -> None:
        return None


class RedisCounter:
    """``HSET <prefix>live:<session> <node> <count>`` with a TTL, then the sum of
    the hash: one pipeline a second for every session with local viewers. On a
    Redis Cluster (``redis+cluster://``) the client splits it into one pipeline
    per master; a session's three commands touch its one key, so they stay in
    order on that key's master."""

    def __init__(self, url: str, node: str, prefix: str) -> None:
        self.redis: Any = redisurl.client(url)
        self.node = node
        self.prefix = prefix

    async def sum(self, counts: dict[str, int]) -> dict[str, int]:
        sessions = list(counts)
        pipe = self.redis.pipeline(transaction=False)
        for s in sessions:
            key = f"{self.prefix}live:{s}"
            pipe.hset(key, self.node, counts[s])
            pipe.pexpire(key, COUNT_TTL_MS)
            pipe.hvals(key)
        out = await pipe.execute()
        return {s: sum(int(v) for v in out[3 * i + 2]) for i, s in enumerate(sessions)}

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass(slots=True)
class Viewer:
    user: str
    room: str
    joined: int  # wall ms
    staff: bool  # follows the staff topic (a host or moderator, or a backend)
    attended: bool = False
    admin: bool = False


@dataclass(slots=True)
class Room:
    """A session as this process holds it while it has local viewers: the open
    questions (public form) with their votes, the answered ones, the pin, and
    what changed since the last ranking push."""

    session: str
    info: dict[str, Any]
    roles: dict[str, str] = field(default_factory=dict)  # user -> host | moderator
    open: dict[int, dict[str, Any]] = field(default_factory=dict)
    answered: dict[int, dict[str, Any]] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)  # question -> version of what we hold
    version: int = 0
    dirty: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    viewers: dict[Sink, Viewer] = field(default_factory=dict)
    count: int = 0  # the viewer count last pushed
    loaded: bool = False

    def ranked(self, limit: int) -> list[dict[str, Any]]:
        return sorted(self.open.values(), key=lambda q: (-q["votes"], q["id"]))[:limit]

    def newer(self, qid: int, version: int) -> bool:
        if version <= self.versions.get(qid, -1):
            return False
        self.versions[qid] = version
        self.version = max(self.version, version)
        return True


class LiveHub:
    def __init__(
        self, repo: LiveSessions, hub: Hub, fanout: Fanout, pipeline: Pipeline, clock: Clock,
        counter: Counter | None = None, attend_after_s: float = 300.0,
    ) -> None:
        self.repo = repo
        self.hub = hub
        self.fanout = fanout
        self.pipeline = pipeline
        self.clock = clock
        self.counter: Counter = counter or LocalCounter()
        self.attend_after_s = attend_after_s
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        self._polls: dict[int, tuple[str, dict[str, Any]]] = {}  # poll -> (conv, its newest results), to push
        self._poll_versions: dict[int, int] = {}
        self._rank_timer: Timer | None = None
        self._count_timer: Timer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counting = False
        self._stopped = False
        self.rank_pushes = 0
        fanout.state_listener = self.state
        fanout.reset_listeners.append(self.reset)

    # -- joining ------------------------------------------------------------------

    async def join(self, sink: Sink, user: str, session: str, room: str, admin: bool) -> Room:
        """Follow the session's topics (leaving another room of it; its staff
        topic too for its hosts and moderators, and ``admin``), wait until this
        process gets their envelopes, and return the session as held here."""
        joined = [s for s, r in self.rooms.items() if sink in r.viewers and s != session]
        if len(joined) >= MAX_SESSIONS_PER_SOCKET:
            raise RequestError(Err.LIMIT, f"a socket views at most {MAX_SESSIONS_PER_SOCKET} sessions")
        topics = [session, f"{session}.{room}"]
        try:
            for t in topics:
                self.hub.follow(sink, t)
            await asyncio.gather(*(self.fanout.conv_ready(t) for t in topics))
            r = await self._room(session)
            staff = admin or r.roles.get(user) in LIVE_MODERATORS
            if staff:
                topics.append(f"{session}:staff")
                self.hub.follow(sink, topics[-1])
                await self.fanout.conv_ready(topics[-1])
        except BaseException:
            if self.viewing(sink, session) is None:  # not a viewer after all: follow nothing of it
                for t in topics:
                    self.hub.unfollow(sink, t)
            raise
        old = r.viewers.get(sink)
        if old is not None and old.room != room:
            self.hub.unfollow(sink, f"{session}.{old.room}")
        if old is not None and old.staff and not staff:
            self.hub.unfollow(sink, f"{session}:staff")
        r.viewers[sink] = Viewer(user, room, old.joined if old else self.clock.wall_ms(), staff,
                                 old.attended if old else False, admin)
        self._start_counting()
        return r

    def held(self, session: str) -> Room | None:
        """The session as this process holds it, if it does (it has viewers here)."""
        r = self.rooms.get(session)
        return r if r is not None and r.loaded else None

    def leave(self, sink: Sink, session: str) -> bool:
        r = self.rooms.get(session)
        v = r.viewers.pop(sink, None) if r is not None else None
        if v is None:
            return False
        for t in (session, f"{session}.{v.room}", f"{session}:staff"):
            self.hub.unfollow(sink, t)
        return True

    def viewing(self, sink: Sink | None, session: str) -> Viewer | None:
        r = self.rooms.get(session)
        return r.viewers.get(sink) if r is not None and sink is not None else None

    async def _room(self, session: str) -> Room:
        r = self.rooms.get(session)
        if r is not None and r.loaded:
            return r
        pending = self._loading.get(session)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self._loading[session] = fut
        try:
            r = self.rooms.get(session) or Room(session, {})
            self.rooms[session] = r
            await self._load(r)
            fut.set_result(r)
            return r
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a joiner that gave up leaves no warning
            raise
        finally:
            del self._loading[session]

    async def _load(self, r: Room) -> None:
        """Read the session from the store into ``r``. Envelopes that arrived
        meanwhile (newer versions) win over what is read."""
        info = await self.repo.session(r.session)
        if info is None:
            raise StoreUnavailable("session vanished")  # ids are never deleted: not reached
        roles = await self.repo.roles(r.session)
        version = info["version"]
        rows = await self.repo.questions(r.session, ("open",), "id", 100_000)
        answered = await self.repo.questions(r.session, ("answered",), "id", 100_000)
        if version >= r.version:
            r.info, r.roles = info, roles
        for row in rows:
            q = question_wire(row, False)
            if r.newer(q["id"], version):
                r.open[q["id"]] = q
        for row in answered[-SNAPSHOT_ANSWERED:]:
            q = question_wire(row, False)
            if r.newer(q["id"], version):
                r.answered[q["id"]] = q
        r.loaded = True

    # -- state envelopes ------------------------------------------------------------

    def publish(self, session: str, item: dict[str, Any]) -> None:
        """Apply a change here and send it to every other process with viewers."""
        self._apply(session, item)
        if self.fanout.bus.shared:
            self.fanout.publish_state(session, msgpack.packb(item))

    def state(self, session: str, payload: bytes) -> None:
        """A state envelope from another process."""
        try:
            item = msgpack.unpackb(payload)
        except Exception:  # pragma: no cover - a newer peer's envelope
            log.warning("undecodable live state envelope for %s", session)
            return
        self._apply(session, item)

    def _apply(self, session: str, item: dict[str, Any]) -> None:
        what = item.get("k")
        if what == "poll":
            self._poll(item)
            return
        r = self.rooms.get(session)
        if r is None:
            return  # no viewer here
        version = item.get("ver", 0)
        if what == "vote":
            qid = item["q"]
            q = r.open.get(qid)
            if q is not None and r.newer(qid, version):
                q["votes"] = item["votes"]
                r.dirty.add(qid)
                self._start_ranking()
        elif what == "question":
            for pub, staff in zip(item["rows"], item["staff"], strict=True):
                self._question(r, pub, version)
                if pub["state"] != "pending":  # the audience sees a question once approved
                    self.hub.publish(session, "live.question", pub)
                self.hub.publish(f"{session}:staff", "live.mod", staff)
        elif what == "session":
            if version >= r.version:
                r.info = item["info"]
                r.version = max(r.version, version)
                if "roles" in item:
                    r.roles = item["roles"]
                    self._restaff(r)
            self.hub.publish(session, "live.session", item["info"])
        elif what == "pin":
            if version >= r.version:
                r.info["pinned"] = item["pinned"]
                r.version = max(r.version, version)
            self.hub.publish(session, "live.pin", {"session": session, "pinned": item["pinned"]})

    def _restaff(self, r: Room) -> None:
        """The session's hosts and moderators changed: its staff topic follows them
        (a moderator removed sees no more askers)."""
        topic = f"{r.session}:staff"
        for sink, v in r.viewers.items():
            staff = v.admin or r.roles.get(v.user) in LIVE_MODERATORS
            if staff != v.staff:
                v.staff = staff
                (self.hub.follow if staff else self.hub.unfollow)(sink, topic)

    def _question(self, r: Room, q: dict[str, Any], version: int) -> None:
        qid = q["id"]
        if not r.newer(qid, version):
            return
        if r.info.get("pinned") == qid and q["state"] not in ("open", "answered"):
            r.info["pinned"] = None  # the store unpinned it with the change
            self.hub.publish(r.session, "live.pin", {"session": r.session, "pinned": None})
        if q["state"] == "open":
            r.open[qid] = q
            r.dirty.add(qid)
            r.removed.discard(qid)
        elif r.open.pop(qid, None) is not None:
            r.removed.add(qid)
            r.dirty.discard(qid)
        if q["state"] == "answered":
            r.answered[qid] = q
            while len(r.answered) > SNAPSHOT_ANSWERED:
                del r.answered[next(iter(r.answered))]
        else:
            r.answered.pop(qid, None)
        self._start_ranking()

    def _poll(self, item: dict[str, Any]) -> None:
        pid, version = item["poll"], item["ver"]
        if version <= self._poll_versions.get(pid, -1):
            return
        self._poll_versions[pid] = version
        self._polls[pid] = (item["conv"], item["results"])
        if item.get("now"):  # created or closed: at once
            self._polls.pop(pid)
            self.hub.publish(item["conv"], "poll", item["results"])
        else:
            self._start_counting()

    def reset(self) -> None:
        """Envelopes may have been lost: reload every session held here."""
        for r in self.rooms.values():
            self._spawn(self._reload(r))

    async def _reload(self, r: Room) -> None:
        try:
            fresh = Room(r.session, {})
            await self._load(fresh)
        except StoreUnavailable:
            return
        changed = {q for q in fresh.open if r.open.get(q, {}).get("votes") != fresh.open[q]["votes"]}
        r.removed |= set(r.open) - set(fresh.open)
        r.open, r.answered, r.info, r.roles = fresh.open, fresh.answered, fresh.info, fresh.roles
        self._restaff(r)
        r.versions, r.version = fresh.versions, max(r.version, fresh.version)
        r.dirty |= changed
        self._start_ranking()

    # -- the shared timers ------------------------------------------------------------

    def _start_ranking(self) -> None:
        if self._rank_timer is None and not self._stopped:
            self._rank_timer = self.clock.call_later(RANK_EVERY, self._rank_round)

    def _rank_round(self) -> None:
        self._rank_timer = None
        pushed = False
        for session, r in list(self.rooms.items()):
            if not r.dirty and not r.removed:
                continue
            votes = [[qid, r.open[qid]["votes"]] for qid in sorted(r.dirty) if qid in r.open]
            d = {"session": session, "version": r.version, "votes": votes, "removed": sorted(r.removed)}
            r.dirty.clear()
            r.removed.clear()
            self.hub.publish(session, "live.rank", d)
            self.rank_pushes += 1
            pushed = True
        if pushed:  # the next round is RANK_EVERY after this one: at most 4 a second
            self._start_ranking()

    def _start_counting(self) -> None:
        if self._count_timer is None and not self._stopped:
            self._count_timer = self.clock.call_later(COUNT_EVERY, self._count_round)

    def _count_round(self) -> None:
        self._count_timer = None
        for conv, results in self._polls.values():
            self.hub.publish(conv, "poll.results", results)
        self._polls.clear()
        self._prune()
        if self.rooms and not self._counting:
            self._counting = True
            self._spawn(self._count())
        if self.rooms:
            self._start_counting()

    def _prune(self) -> None:
        """Forget viewers whose socket went (the hub no longer has them follow the
        session) and sessions nobody here views."""
        for session, r in list(self.rooms.items()):
            gone = [s for s in r.viewers if session not in self.hub.follows(s)]
            for s in gone:
                v = r.viewers.pop(s)
                for t in (f"{session}.{v.room}", f"{session}:staff"):
                    self.hub.unfollow(s, t)
            if not r.viewers and session not in self._loading and session not in self.hub.topics:
                del self.rooms[session]

    async def _count(self) -> None:
        try:
            now = self.clock.wall_ms()
            counts = {s: len(r.viewers) for s, r in self.rooms.items()}
            attend: list[tuple[str, str]] = []
            after_ms = self.attend_after_s * 1000
            for s, r in self.rooms.items():
                started = r.info.get("started_ts")
                if r.info.get("state") != "live" or started is None:
                    continue  # watching counts while the session is live
                for v in r.viewers.values():
                    if not v.attended and now - max(v.joined, started) >= after_ms:
                        v.attended = True
                        attend.append((s, v.user))
            try:
                sums = await self.counter.sum(counts)
            except Exception as exc:  # Redis down: this process's own counts
                log.debug("viewer counts: %r", exc)
                sums = counts
            for s, n in sums.items():
                held = self.rooms.get(s)
                if held is None or n == held.count:
                    continue
                held.count = n
                self.hub.publish(s, "live.viewers", {"session": s, "viewers": n})
                if n > held.info.get("peak", 0):
                    held.info["peak"] = n
                    await self._write(self.repo.raise_peak(s, n))
            if attend:
                await self._write(self.repo.attend(sorted(set(attend)), self.clock.wall_ms()))
        finally:
            self._counting = False

    async def _write(self, op: Any) -> None:
        try:
            await self.pipeline.write(op)
        except Exception as exc:  # best effort: the next round tries again
            log.debug("live write: %r", exc)

    def count(self, session: str) -> int:
        r = self.rooms.get(session)
        return max(r.count, len(r.viewers)) if r is not None else 0

    # -- life ---------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopped = True
        for t in (self._rank_timer, self._count_timer):
            if t is not None:
                t.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.counter.close()

