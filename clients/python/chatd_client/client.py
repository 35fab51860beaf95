"""The chatd client: :class:`Client`, its request API and the events it delivers.

A :class:`Client` holds a :class:`~chatd_client.connection.Connection`, the socket
layer (reader, supervisor, reconnect by close code, catch-up markers in its
*inbox*), and adds two things on top:

* the **request API**: :meth:`Client.request`, a typed wrapper per op, and the
  retry loop under them. Requests wait until a socket is authenticated. If the
  socket drops before the reply, idempotent ops (reads, ``send`` with its
  ``cid``, ...) are sent again after the reconnect; the others raise
  :class:`ConnectionLost`, since they may or may not have been applied.
  Temporary error replies to idempotent ops are retried after a backoff;
* the **deliverer**, a task that consumes the inbox in order. A marker makes it
  ``sync`` from the last ``pos``; pushes that arrive meanwhile wait behind the
  marker in the inbox, so they are merged after the catch-up. Every message goes
  through :class:`~chatd_client.ordering.Ordering` (dedup, seq order, gaps filled
  with ``history``, see ``delivery.py``) before it reaches :meth:`Client.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self, TypeAlias

from chatd_protocol import (
    CODECS,
    JSON,
    MSGPACK,
    RETRY_SAFE,
    ErrorReply,
    Push,
    RequestError,
    check_args,
)

from .connection import CatchUp, Connection, Dropped, TokenProvider
from .delivery import Delivery
from .errors import ChatError, ClientClosed, ConnectionLost

log = logging.getLogger("chatd_client")

Event: TypeAlias = Push  # what events() yields: Event.type ("msg", "read", ...) and Event.d

#: Ops that may be sent twice without doing anything twice, from the protocol's
#: op table (``send`` is one because the server deduplicates on its ``cid``;
#: ``read`` never moves back).
IDEMPOTENT_OPS = RETRY_SAFE
LIVE_PREFIX = "l:"  # a live session's conversations: nothing is replayed, nothing is ordered
TEMPORARY_CODES = frozenset({"rate_limited", "unavailable", "internal"})

_END = object()


def _on_connection(name: str) -> Any:
    """A :class:`Client` attribute that its connection reads (or sets): reading
    or assigning it on the client goes to the connection's."""
    return property(lambda self: getattr(self._conn, name), lambda self, value: setattr(self._conn, name, value))


class Client:
    """A chatd connection that survives disconnects.

    ``token`` is a static token; ``token_provider`` (sync or async callable) is
    called for the first token and again whenever the server asks for a new one
    (close codes 4100-4199). With only a static token, a refused token (4101,
    4102) stops the client with :class:`AuthError`.
    """

    url: str = _on_connection("url")
    reconnect: bool = _on_connection("reconnect")
    backoff_min: float = _on_connection("backoff_min")
    backoff_max: float = _on_connection("backoff_max")
    open_timeout: float = _on_connection("open_timeout")
    #: the authenticated user ({"id", "name", "type", "badges", "roles"})
    user: dict[str, Any] = _on_connection("user")
    #: server limits from the auth reply (max_frame, max_text, ...)
    limits: dict[str, Any] = _on_connection("limits")

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        encoding: str = "msgpack",
        reconnect: bool = True,
        backoff_min: float = 0.2,
        backoff_max: float = 10.0,
        open_timeout: float = 10.0,
        send_retries: int = 8,
    ) -> None:
        if token is None and token_provider is None:
            raise ValueError("give a token or a token_provider")
        if encoding not in ("msgpack", "json"):
            raise ValueError("encoding must be 'msgpack' or 'json'")
        self.send_retries = send_retries
        self._conn = Connection(
            url,
            token=token,
            token_provider=token_provider,
            codec=CODECS[MSGPACK if encoding == "msgpack" else JSON],
            reconnect=reconnect,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            open_timeout=open_timeout,
            on_auth=self._authenticated,
            on_stop=self._stopped,
        )
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._delivery = Delivery(
            self._call_idempotent,
            lambda m: self._events.put_nowait(Push("msg", m)),
            lambda: self._events.put_nowait(Push("reset", {"reason": "position"})),
        )
        self._pos: int | None = None  # sync position from the last auth (first) / sync
        self._epoch: str | None = None  # the store epoch self._pos belongs to
        self._deliverer: asyncio.Task[None] | None = None
        self._live: dict[str, str] = {}  # session -> room this client views

    # -- lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket and authenticate; raise if that fails.

        Raises :class:`AuthError` (token refused), :class:`ConnectError`
        (network, handshake), :class:`ClientClosed` (server closed for good) or
        :class:`ChatError` (auth answered with an error).
        """
        await self._conn.start()
        self._pos = self._conn.auth_pos  # baseline: no replay of older history
        self._epoch = self._conn.epoch
        self._deliverer = asyncio.create_task(self._deliver(), name="chatd-deliverer")

    async def close(self) -> None:
        """Close the socket and stop; :meth:`events` ends after what was delivered."""
        if self._conn.closing:
            return
        await self._conn.hang_up()
        tasks = [t for t in (self._conn.supervisor, self._deliverer) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._conn.finish(None)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._conn.connected

    async def events(self) -> AsyncIterator[Event]:
        """Pushes for the application, in order: ``msg`` (exactly once, in seq
        order per conversation, across reconnects), ``read`` and any other push.

        Ends after :meth:`close`; raises :class:`ClientClosed` if the client
        stopped because of the server (e.g. :class:`AuthError`).
        """
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # other iterators end too
                if self._conn.error is not None:
                    raise self._conn.error
                return
            yield item

    def _authenticated(self, user: dict[str, Any]) -> None:
        self._delivery.me = user.get("id")

    def _stopped(self, error: ClientClosed | None) -> None:
        """The connection stopped for good: end events(); if the server stopped
        it, stop the deliverer too (close() stops it itself)."""
        self._events.put_nowait(_END)
        if error is not None and self._deliverer is not None and self._deliverer is not asyncio.current_task():
            self._deliverer.cancel()

    # -- requests ----------------------------------------------------------------

    async def request(self, op: str, **d: Any) -> dict[str, Any]:
        """Send one request and return the reply's ``d``; raise :class:`ChatError`
        on an error reply. ``None`` arguments are left out."""
        args = {k: v for k, v in d.items() if v is not None}
        return await self._call(op, args, idempotent=op in IDEMPOTENT_OPS)

    async def ping(self) -> dict[str, Any]:
        return await self.request("ping")

    async def dm_open(self, user: str) -> dict[str, Any]:
        return await self.request("dm.open", user=user)

    async def block(self, user: str) -> dict[str, Any]:
        return await self.request("block", user=user)

    async def unblock(self, user: str) -> dict[str, Any]:
        return await self.request("unblock", user=user)

    async def circle_create(
        self,
        name: str,
        category: str,
        description: str | None = None,
        certified: bool | None = None,
    ) -> dict[str, Any]:
        return await self.request(
            "circle.create",
            name=name,
            category=category,
            description=description,
            certified=certified,
        )

    async def circle_list(
        self, category: str | None = None, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        return await self.request("circle.list", category=category, after=after, limit=limit)

    async def circle_join(self, conv: str) -> dict[str, Any]:
        return await self.request("circle.join", conv=conv)

    async def circle_leave(self, conv: str) -> dict[str, Any]:
        return await self.request("circle.leave", conv=conv)

    async def circle_role(self, conv: str, user: str, role: str) -> dict[str, Any]:
        return await self.request("circle.role", conv=conv, user=user, role=role)

    async def circle_announce(self, conv: str, text: str) -> dict[str, Any]:
        return await self.request("circle.announce", conv=conv, text=text)

    async def circle_mute(self, conv: str, user: str, seconds: int) -> dict[str, Any]:
        return await self.request("circle.mute", conv=conv, user=user, seconds=seconds)

    async def members(self, conv: str, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("members", conv=conv, after=after, limit=limit)

    async def send(
        self,
        conv: str,
        text: str,
        cid: str | None = None,
        mentions: list[str] | None = None,
        mention_all: bool | None = None,
    ) -> dict[str, Any]:
        """Send a text message and return its ack ``{conv, seq, pos, ts, dup}``.

        Dropped connections and temporary errors are retried with the same
        ``cid``, so the message is created at most once (a retry that the server
        had already applied comes back with ``dup: true``).
        """
        return await self.request(
            "send",
            conv=conv,
            cid=cid or uuid.uuid4().hex,
            text=text,
            mentions=mentions,
            mention_all=mention_all,
        )

    async def points_balance(self) -> dict[str, Any]:
        """``{points, cv}``: spendable points and contribution value."""
        return await self.request("points.balance")

    async def points_ledger(self, before: int | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("points.ledger", before=before, limit=limit)

    async def points_top(self, limit: int | None = None) -> dict[str, Any]:
        return await self.request("points.top", limit=limit)

    async def tip(self, conv: str, seq: int, amount: int, tid: str | None = None) -> dict[str, Any]:
        """Tip the author of message ``seq`` in ``conv`` with ``amount`` points;
        retried under the same ``tid``, so points move once."""
        return await self.request("tip", conv=conv, seq=seq, amount=amount, tid=tid or uuid.uuid4().hex)

    async def red_packet(
        self, conv: str, total: int, shares: int, split: str = "random", rid: str | None = None
    ) -> dict[str, Any]:
        """Send a red packet of ``total`` points in ``shares`` ("random" or "equal")."""
        return await self.request(
            "redpacket.send", conv=conv, total=total, shares=shares, split=split, rid=rid or uuid.uuid4().hex
        )

    async def claim(self, packet: str) -> dict[str, Any]:
        """Claim a share of red packet ``packet``: ``{id, amount, left, dup}``."""
        return await self.request("redpacket.claim", id=packet)

    async def notify_settings(self, conv: str | None = None) -> dict[str, Any]:
        """This user's offline-notification settings (and one conversation's mute)."""
        return await self.request("notify.get", **({"conv": conv} if conv else {}))

    async def notify_mute(self, until_ms: int, conv: str | None = None) -> dict[str, Any]:
        """Mute offline notifications until ``until_ms`` (0 unmutes), everywhere or in ``conv``."""
        return await self.request("notify.set", muted_until=until_ms, **({"conv": conv} if conv else {}))

    async def notify_quiet_hours(self, start_min: int | None, end_min: int = 0, utc_offset_min: int = 0) -> dict[str, Any]:
        """Quiet hours [start, end) in minutes of the local day (notifications are
        then silent); ``start_min=None`` clears them."""
        if start_min is None:
            return await self.request("notify.set", quiet_off=True)
        return await self.request(
            "notify.set", quiet_from=start_min, quiet_to=end_min, utc_offset=utc_offset_min
        )

    async def recall(self, conv: str, seq: int) -> dict[str, Any]:
        return await self.request("recall", conv=conv, seq=seq)

    async def history(self, conv: str, before: int | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("history", conv=conv, before=before, limit=limit)

    async def read(self, conv: str, seq: int) -> dict[str, Any]:
        return await self.request("read", conv=conv, seq=seq)

    async def sync(self, since: int, limit: int | None = None) -> dict[str, Any]:
        """Raw ``sync``. The client already syncs after each reconnect and feeds
        :meth:`events`; messages returned here bypass that."""
        return await self.request("sync", since=since, limit=limit)

    async def convs(self, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("convs", after=after, limit=limit)

    async def presence_sub(self, users: list[str]) -> list[dict[str, Any]]:
        """Subscribe to users' presence; returns their current states. Changes
        arrive from :meth:`events` as ``presence`` pushes. Subscriptions belong
        to a socket: call again after a reconnect."""
        reply = await self.request("presence.sub", users=users)
        states: list[dict[str, Any]] = reply["presence"]
        return states

    async def presence_unsub(self, users: list[str]) -> dict[str, Any]:
        return await self.request("presence.unsub", users=users)

    async def presence_set(self, status: str | None = None, on_duty: bool | None = None) -> dict[str, Any]:
        """This device's presence: ``status`` "online"/"away"; ``on_duty`` (staff)."""
        return await self.request("presence.set", status=status, on_duty=on_duty)

    async def typing(self, conv: str) -> dict[str, Any]:
        """Tell ``conv``'s members this user is typing (throttled by the server)."""
        return await self.request("typing", conv=conv)

    # -- service groups (protocol/README.md §4, "Service requests", "Episodes and clocks")

    async def service_request(self, conv: str, type: str, note: str | None = None,
                              rid: str | None = None) -> dict[str, Any]:
        """The owner opens a service request (``type``: maintenance, road_service,
        charging, test_drive, rescue); ``rid`` defaults to a fresh id (a retry of
        this call reuses it)."""
        return await self.request("service.request", conv=conv, type=type, note=note, rid=rid or uuid.uuid4().hex)

    async def service_status(self, conv: str, id: int, status: str) -> dict[str, Any]:
        return await self.request("service.status", conv=conv, id=id, status=status)

    async def service_requests(self, conv: str, open_only: bool = False) -> dict[str, Any]:
        return await self.request("service.requests", conv=conv, open=open_only or None)

    async def service_close(self, conv: str, episode: int | None = None) -> dict[str, Any]:
        return await self.request("service.close", conv=conv, episode=episode)

    async def service_rate(self, conv: str, episode: int, stars: int, comment: str | None = None) -> dict[str, Any]:
        return await self.request("service.rate", conv=conv, episode=episode, stars=stars, comment=comment)

    async def inbox(self, filter: str | None = None, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """A staff member's service groups, longest waiting first."""
        return await self.request("inbox", filter=filter, after=after, limit=limit)

    async def service_claim(self, conv: str, seq: int) -> dict[str, Any]:
        """A bot claims a customer message before answering it (ChatError
        ``conflict``: another bot has it, or a human has the episode)."""
        return await self.request("service.claim", conv=conv, seq=seq)

    async def service_to_human(self, conv: str, text: str | None = None) -> dict[str, Any]:
        """A bot hands the episode to a human; the Fellow is alerted."""
        return await self.request("service.to_human", conv=conv, text=text)

    async def campaign_claim(self, campaign: int) -> dict[str, Any]:
        return await self.request("campaign.claim", id=campaign)

    # -- live sessions and polls (protocol/README.md §4 "Live sessions", §5) -------------
    #
    # A viewer's socket follows a session after live.join; nothing is replayed to it.
    # After a reconnect (or a ``resync`` push) the client joins its sessions again and
    # hands the application each fresh snapshot as a ``live.snapshot`` event (or
    # ``live.left`` with the error code when the session can no longer be joined).
    # Audience chat lines come as ``msg`` events for the room (``l:<n>.<room>``) as
    # they arrive: no order or gap filling, since a room has no history to fill from.

    async def live_create(self, title: str, cid: str | None = None, **fields: Any) -> dict[str, Any]:
        """Make a session (staff with the ``exec`` or ``host`` role): ``fields`` are
        ``description``, ``hosts``, ``moderators``, ``starts_ts``, ``approval``,
        ``anonymous``, ``slow_s``, ``ask_interval_s``, ``rooms``."""
        return await self.request("live.create", cid=cid or uuid.uuid4().hex, title=title, **fields)

    async def live_update(self, session: str, **fields: Any) -> dict[str, Any]:
        return await self.request("live.update", session=session, **fields)

    async def live_state(self, session: str, state: str) -> dict[str, Any]:
        """``live``, ``ended`` or ``archived`` (a session's hosts)."""
        return await self.request("live.state", session=session, state=state)

    async def live_list(self, state: str | None = None, after: str | None = None,
                        limit: int | None = None) -> dict[str, Any]:
        return await self.request("live.list", state=state, after=after, limit=limit)

    async def live_follow(self, session: str, on: bool = True) -> dict[str, Any]:
        """Get a ``live.started`` push when the session goes live."""
        return await self.request("live.follow", session=session, on=on)

    async def live_join(self, session: str, room: str | None = None) -> dict[str, Any]:
        """View a session (its ``room``, ``main`` by default): the snapshot; live
        pushes follow, and the client rejoins after a reconnect."""
        snap = await self.request("live.join", session=session, room=room)
        self._live[session] = snap.get("room", room or "main")
        return snap

    async def live_leave(self, session: str) -> dict[str, Any]:
        self._live.pop(session, None)
        return await self.request("live.leave", session=session)

    async def live_ask(self, session: str, text: str, *, anonymous: bool | None = None, room: str | None = None,
                       cid: str | None = None) -> dict[str, Any]:
        return await self.request("live.ask", session=session, text=text, anonymous=anonymous, room=room,
                                  cid=cid or uuid.uuid4().hex)

    async def live_vote(self, session: str, id: int, on: bool = True) -> dict[str, Any]:
        """Vote for a question (``on`` False: withdraw the vote)."""
        return await self.request("live.vote", session=session, id=id, on=on)

    async def live_chat(self, session: str, text: str, *, room: str | None = None,
                        cid: str | None = None) -> dict[str, Any]:
        return await self.request("live.chat", session=session, text=text, room=room, cid=cid or uuid.uuid4().hex)

    async def live_moderate(self, session: str, id: int, action: str) -> dict[str, Any]:
        """``approve``, ``reject``, ``hide`` or ``unhide`` (hosts and moderators)."""
        return await self.request("live.moderate", session=session, id=id, action=action)

    async def live_merge(self, session: str, id: int, into: int) -> dict[str, Any]:
        return await self.request("live.merge", session=session, id=id, into=into)

    async def live_answer(self, session: str, id: int, text: str | None = None,
                          live: bool | None = None) -> dict[str, Any]:
        """Answer in ``text``, or ``live=True``: answered on stage (hosts)."""
        return await self.request("live.answer", session=session, id=id, text=text, live=live)

    async def live_mark(self, session: str, id: int, action: str) -> dict[str, Any]:
        """``dismiss``, ``reopen``, ``pin`` or ``unpin`` (hosts)."""
        return await self.request("live.mark", session=session, id=id, action=action)

    async def live_queue(self, session: str, state: str | None = None, after: int | None = None,
                         limit: int | None = None) -> dict[str, Any]:
        """The questions with their askers, pending and open by default (hosts and moderators)."""
        return await self.request("live.queue", session=session, state=state, after=after, limit=limit)

    async def live_mute(self, session: str, user: str, seconds: int) -> dict[str, Any]:
        """Mute ``user`` in the session's chat for ``seconds`` (0: unmute)."""
        return await self.request("live.mute", session=session, user=user, seconds=seconds)

    async def live_archive(self, session: str) -> dict[str, Any]:
        """An ended session's answered questions, polls and figures."""
        return await self.request("live.archive", session=session)

    async def poll_create(self, conv: str, question: str, options: list[str], closes_ts: int, *,
                          multi: bool | None = None, weighted: bool | None = None,
                          cid: str | None = None) -> dict[str, Any]:
        """A poll in a live session or a circle; ``weighted``: votes weigh by contribution value."""
        return await self.request("poll.create", conv=conv, question=question, options=options,
                                  closes_ts=closes_ts, multi=multi, weighted=weighted, cid=cid or uuid.uuid4().hex)

    async def poll_vote(self, poll: int, options: list[int]) -> dict[str, Any]:
        """Choose ``options`` (their indexes); a later vote replaces it until the poll closes."""
        return await self.request("poll.vote", poll=poll, options=options)

    async def poll_close(self, poll: int) -> dict[str, Any]:
        return await self.request("poll.close", poll=poll)

    async def poll_get(self, poll: int) -> dict[str, Any]:
        return await self.request("poll.get", poll=poll)

    async def _rejoin(self) -> None:
        """Join the sessions this client views again: a fresh snapshot each."""
        for session, room in list(self._live.items()):
            try:
                snap = await self._call("live.join", {"session": session, "room": room}, idempotent=True)
            except ChatError as exc:
                self._live.pop(session, None)
                self._events.put_nowait(Push("live.left", {"session": session, "reason": exc.code}))
                continue
            self._events.put_nowait(Push("live.snapshot", snap))

    async def _call(self, op: str, d: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        try:
            check_args(op, d)  # refuse locally what the server would refuse
        except RequestError as exc:
            raise ChatError(str(exc.code), exc.message) from None
        attempt = 0
        while True:
            try:
                frame = await self._conn.exchange(op, d)
            except Dropped:
                if not idempotent:
                    raise ConnectionLost(
                        f"connection lost before the reply to {op!r}; it may have been applied"
                    ) from None
                continue
            if not isinstance(frame, ErrorReply):
                reply: dict[str, Any] = frame.d
                return reply
            err = ChatError(frame.code, frame.message, frame.temporary, frame.retry_after_ms)
            if not (idempotent and frame.code in TEMPORARY_CODES and attempt < self.send_retries):
                raise err
            if frame.retry_after_ms is not None:
                delay = frame.retry_after_ms / 1000
            else:
                delay = self._conn.backoff(attempt)
            attempt += 1
            log.info("%s: %s, retrying in %.2fs", op, err, delay)
            await asyncio.sleep(delay)

    async def _call_idempotent(self, op: str, d: dict[str, Any]) -> dict[str, Any]:
        return await self._call(op, d, idempotent=True)

    # -- delivery ----------------------------------------------------------------

    async def _deliver(self) -> None:
        while True:
            item = await self._conn.inbox.get()
            try:
                if isinstance(item, CatchUp):
                    if self._pos is None:
                        self._pos = self._conn.auth_pos
                    elif self._epoch is not None and self._conn.epoch != self._epoch:
                        # another store now (a new deployment): our position and what
                        # we know of each conversation's seqs mean nothing there
                        log.warning(
                            "the server's store changed (epoch %s -> %s); starting over", self._epoch, self._conn.epoch
                        )
                        self._delivery.reset()
                        self._pos = self._conn.auth_pos
                        # what happened there before this socket's auth is not replayed:
                        # the application re-reads what it shows (history)
                        self._events.put_nowait(Push("reset", {"reason": "epoch", "epoch": self._conn.epoch}))
                    else:
                        self._pos = await self._delivery.catch_up(self._pos, fallback=self._conn.auth_pos)
                    self._epoch = self._conn.epoch
                    await self._rejoin()
                elif item.type == "msg" and str(item.d.get("conv", "")).startswith(LIVE_PREFIX):
                    self._events.put_nowait(item)  # an audience chat line: as it comes (nothing to fill from)
                elif item.type == "msg":
                    await self._delivery.offer([item.d])
                elif item.type == "resync":
                    # the server's processes lost touch for a while: pushes may be
                    # missing; catch up as after a reconnect, then tell the app
                    # (its presence view may be stale)
                    since = self._pos if self._pos is not None else self._conn.auth_pos
                    if since is not None:
                        self._pos = await self._delivery.catch_up(since, fallback=self._conn.auth_pos)
                    self._events.put_nowait(item)
                    await self._rejoin()  # live pushes may be missing too: fresh snapshots
                else:
                    self._events.put_nowait(item)
            except ClientClosed:
                return
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropped malformed push %r: %r", item, exc)
