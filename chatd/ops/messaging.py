"""Messages: send (the hot path), recall, history, read cursors, catch-up."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from chatd_protocol import Err, RequestError, RequestId

from ..clock import Clock
from ..core.caller import Caller
from ..core.directory import Directory
from ..core.fanout import Fanout
from ..core.outbox import Outbox
from ..core.pipeline import Pipeline
from ..kinds import ConvState
from ..limits import Limiter
from ..metrics import Metrics
from ..store.base import Members, Messages
from ..store.records import TEXT, Appended, message_wire, pack
from .base import Args, Commit, Reply, Responder, member_state

# Encoded replies stay under this size whatever the codec: JSON escapes control
# characters as 6 bytes each, so the store's byte budget alone is not enough.
MAX_REPLY = 768 * 1024


def _fit(caller: Caller, msgs: list[dict[str, Any]], keep_newest: bool) -> tuple[list[dict[str, Any]], bool]:
    """Drop messages (the oldest or the newest end) until the encoded list fits MAX_REPLY."""
    trimmed = False
    while len(msgs) > 1 and len(caller.codec.dumps(msgs)) > MAX_REPLY:
        half = len(msgs) // 2
        msgs = msgs[half:] if keep_newest else msgs[:half]
        trimmed = True
    return msgs, trimmed


class _Waiter:
    """A responder for a caller that awaits its ack."""

    __slots__ = ("fut",)

    def __init__(self) -> None:
        self.fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    def answer(self, rid: RequestId, d: Reply) -> None:
        self.fut.set_result(d)

    def refuse(self, rid: RequestId, exc: RequestError) -> None:
        self.fut.set_exception(exc)


class Messaging:
    def __init__(
        self,
        pipeline: Pipeline,
        commit: Commit,
        messages: Messages,
        members: Members,
        directory: Directory,
        fanout: Fanout,
        outbox: Outbox,
        limiter: Limiter,
        metrics: Metrics,
        clock: Clock,
        touched: Callable[[str], None],
        max_text: int,
        recall_window_s: int,
        receipt_max_members: int,
    ) -> None:
        self.pipeline = pipeline
        self.commit = commit
        self.messages = messages
        self.members = members
        self.directory = directory
        self.fanout = fanout
        self.outbox = outbox
        self.limiter = limiter
        self.metrics = metrics
        self.clock = clock
        self.touched = touched  # a conversation with a staff inbox row changed (InboxPushes.touch)
        self.max_text = max_text
        self.recall_window_ms = recall_window_s * 1000
        self.receipt_max_members = receipt_max_members
        self._send_seconds = metrics.op("send")  # from the request to its ack, the commit included

    def send_now(self, caller: Caller, rid: RequestId, d: Args, respond: Responder) -> bool:
        """The hot path, run synchronously as the frame is parsed. Returns False
        (nothing done) when the conversation's state is not cached; the socket
        then runs ``send_later``, which loads it first."""
        state = self.directory.cached(d["conv"])
        if state is None:
            return False
        self._submit(caller, d, state, rid, respond)
        return True

    def _submit(self, caller: Caller, d: Args, state: ConvState, rid: RequestId, respond: Responder) -> None:
        """Check ``send`` against the cached state and submit its write; the ack
        (or a refusal from the store) goes to ``respond`` once committed. One
        closure per message for each outcome, as the old hot path had."""
        user = caller.user
        conv = d["conv"]
        role = state.members.get(user)
        if role is None:
            raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
        text = d["text"]
        if len(text) > self.max_text:
            raise RequestError(Err.TOO_LONG, f"text is over {self.max_text} characters")
        now = self.clock.wall_ms()
        kind = state.kind
        mention_all = d.get("mention_all", False)
        kind.check_send(state, user, role, mention_all, now)
        mentions = d.get("mentions")
        if mentions:
            mentions = list(dict.fromkeys(m for m in mentions if m in state.members))
        wait = self.limiter.wait(user)
        if wait:
            raise RequestError(Err.RATE_LIMITED, "send rate exceeded", retry_after_ms=int(wait * 1000) + 1)

        cid = d["cid"]
        started = self.clock.monotonic()
        data: dict[str, Any] = {"a": caller.author, "t": text}
        if mentions:
            data["m"] = mentions
        if mention_all:
            data["ma"] = True

        def on_commit(a: Appended) -> None:
            respond.answer(rid, {"conv": a.conv, "seq": a.seq, "pos": a.pos, "ts": a.ts, "dup": a.dup})
            self._send_seconds.observe(self.clock.monotonic() - started)
            if a.dup:
                return
            self.metrics.text_messages += 1
            self.fanout.publish(conv, "msg", message_wire(conv, a.seq, a.pos, user, cid, now, TEXT, data))
            self.outbox.happened("message.sent")
            if kind.inbox_rows:
                self.touched(conv)

        def on_error(exc: RequestError) -> None:
            respond.refuse(rid, exc)

        self.pipeline.submit(
            self.messages.append(conv, user, cid, now, pack(data), kind.append_effects), on_commit, on_error
        )

    async def send(self, caller: Caller, d: Args) -> Reply:
        """``send`` for a caller that waits for its ack (an HTTP admin request,
        a test): the ack once committed."""
        waiter = _Waiter()
        reply = await self.send_later(caller, 0, d, waiter)
        return reply if reply is not None else await waiter.fut

    async def send_later(self, caller: Caller, rid: RequestId, d: Args, respond: Responder) -> Reply | None:
        """``send`` when the fast path could not run or refused: it answers
        through ``respond`` once committed, without holding up the socket."""
        # Before refusing, look for the same ``cid``: a retry of a message that was
        # stored (say, before the sender was muted) gets its original ack.
        try:
            state, _ = await member_state(self.directory, caller, d["conv"])
            self._submit(caller, d, state, rid, respond)
            return None
        except RequestError:
            original = await self.messages.find(caller.user, d["cid"])
            if original is None:
                raise
            return {"conv": original.conv, "seq": original.seq, "pos": original.pos, "ts": original.ts, "dup": True}

    async def recall(self, caller: Caller, d: Args) -> Reply:
        conv, seq = d["conv"], d["seq"]
        state, _ = await member_state(self.directory, caller, conv)
        check = functools.partial(state.kind.check_recall, self.recall_window_ms)
        inbox = state.kind.inbox_rows
        event = await self.commit(
            self.messages.recall(conv, seq, caller.user, caller.author, self.clock.wall_ms(), check),
            (lambda result: self.touched(conv)) if inbox else None,
        )
        return {"seq": event.msg["seq"]}

    async def history(self, caller: Caller, d: Args) -> Reply:
        await member_state(self.directory, caller, d["conv"])
        msgs, more = await self.messages.history(d["conv"], d.get("before"), d.get("limit", 50))
        msgs, trimmed = _fit(caller, msgs, keep_newest=True)
        return {"messages": msgs, "more": more or trimmed}

    async def read(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        state, _ = await member_state(self.directory, caller, conv)
        user = caller.user
        receipts = state.kind.receipts(state, self.receipt_max_members)

        def after(result: tuple[int, int, bool]) -> None:
            if receipts and result[2]:  # only when the cursor moved
                self.fanout.publish(conv, "read", {"conv": conv, "user": user, "seq": result[0]})

        read_seq, unread, _ = await self.commit(self.members.mark_read(conv, user, d["seq"]), after)
        return {"read_seq": read_seq, "unread": unread}

    async def sync(self, caller: Caller, d: Args) -> Reply:
        since = d["since"]
        limit = d.get("limit", 500)
        epoch = self.pipeline.epoch
        head = self.pipeline.head  # read before the query: everything <= head is in it
        if since > head:  # past what this process committed: another may have, or never
            head = await self.messages.head()
            if since > head:  # a position this store never gave: another store's, or a restored copy's
                return {"messages": [], "pos": head, "more": False, "convs": [], "epoch": epoch}
        msgs, changed, more = await self.messages.since(caller.user, since, limit)
        msgs, trimmed = _fit(caller, msgs, keep_newest=False)
        more = more or trimmed
        if more:
            pos = msgs[-1]["pos"]
        else:
            pos = max(head, since, msgs[-1]["pos"] if msgs else 0)
        return {
            "messages": msgs,
            "pos": pos,
            "more": more,
            "epoch": epoch,
            "convs": [
                {"conv": c.conv, "last_seq": c.last_seq, "read_seq": c.read_seq, "unread": c.last_seq - c.read_seq}
                for c in changed
            ],
        }
