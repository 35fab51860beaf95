"""The store interface: one repository per aggregate, as Protocols, and the
delivery guarantees every engine must keep.

chatd's core and ops see only this module and ``records.py``: an engine (SQLite
under ``sqlite/``; PostgreSQL under ``postgres/``, which runs the same repositories
and write ops in its own dialect) implements these Protocols, and the contract suite
(``tests/store/test_contract.py``) runs the same checks against every engine.

Writes are deferred. A repository's write method does not touch the database:
it returns a :class:`Write`, which the pipeline (``chatd/core/pipeline.py``)
batches and hands to :meth:`Store.run_batch` to run with others in *one*
transaction (group commit). The caller learns the result only after COMMIT
returned: that is what lets chatd acknowledge a message only once it is
durable. Reads are coroutines and see committed data only.

Invariants (every engine; the contract suite checks each):

1. ``seq`` is gapless and strictly increasing per conversation, starting at 1,
   and is assigned inside the write transaction.
2. ``pos`` (the global position of a message, the catch-up token) is strictly
   increasing in commit order: once a reader sees a message at ``pos`` p, it
   sees every committed message below p, and no message below p commits
   later. ``sync`` and the points worker read "everything after p" and would
   skip one forever otherwise. (A plain sequence is not enough on an engine
   with concurrent writers: pos 11 can commit before pos 10.)
3. A higher ``seq`` of a conversation commits after every lower one (the
   order gate in ``core/fanout`` fills a gap from the store and relies on the
   missing seqs being committed already).
4. A refused write (a :class:`RequestError` raised by its checks) leaves
   nothing behind: no row, no gap in ``seq`` or ``pos``, while the other
   writes of its batch commit.
5. A text message is idempotent on ``(sender, cid)``: a retry returns the
   original :class:`~chatd.store.records.Appended` with ``dup=True`` and
   writes nothing, across restarts.
6. The head (:meth:`Messages.head`) read after a batch committed is at least
   the highest ``pos`` of that batch.
7. Interaction events are written in the transaction of their interaction
   (the outbox): committed together or not at all.
8. Points are conserved: balances never go negative; a tip or red packet moves
   points, it never makes or loses any (the sum of balances plus what open red
   packets hold equals the sum of awards).
9. A lease has at most one holder at a time.
10. A quota (``records.Quota``) is charged in the transaction of the write it
    limits: a refused write charges nothing, and with several processes the
    count is exact.

Engines also serialise the conversation-level checks a write makes (a join
checks membership, a claim checks shares left) with the writes they guard, so
those checks stay right with several processes on one store. Invariants 2 and 3
mean one point of serialisation for a batch's positions: SQLite has it for free
(one writer at a time); an engine with concurrent writers (PostgreSQL) must hold
a position allocator to commit, or publish positions with a "persisted up to"
watermark, and pays for it (docs/design.md). Where a write can be refused for
several reasons, its docstring gives the order; the contract suite pins it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from chatd_protocol import RequestError

from .records import (
    Appended,
    ConvCursor,
    ConvRecord,
    ConvSnapshot,
    Effect,
    Entry,
    EventRow,
    HookFailure,
    MemberView,
    MessageRow,
    Notification,
    NotifyContext,
    NotifyPrefs,
    NotifySource,
    NotifyState,
    Quota,
    SystemMessage,
)

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not run a read or commit a batch (disk full, I/O error,
    a closed store): nothing of the batch was committed."""


class Write(Generic[T]):
    """One deferred write, made by a repository and run by the same engine's
    :meth:`Store.run_batch` inside a batch transaction. Opaque to the core.

    ``savepoint=False`` promises that the write either completes or raises
    :class:`RequestError` before it writes anything (the text-message fast
    path); other writes run inside a savepoint so that a refusal rolls back
    their partial writes alone.

    ``many``, where given, may run a contiguous run of writes of the same ``fn`` at
    once: ``many(tx, [args, ...])`` gives each write's result, or the RequestError
    refusing it, exactly as running them one after the other would. It is for
    ``savepoint=False`` writes only. An engine for which a statement is a round
    trip (PostgreSQL) then writes a batch's texts with one INSERT, not one each.
    """

    __slots__ = ("args", "fn", "many", "savepoint")

    def __init__(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...] = (),
        savepoint: bool = True,
        many: Callable[[Any, list[tuple[Any, ...]]], list[Any]] | None = None,
    ) -> None:
        assert many is None or not savepoint, "a run of writes shares no savepoint"
        self.fn = fn
        self.args = args
        self.savepoint = savepoint
        self.many = many


# A decision a write asks of the conversation's kind inside its transaction,
# from the state read there (see chatd/kinds/base.py). It raises RequestError
# to refuse. Passing pure functions keeps every engine's checks identical.
KindCheck = Callable[[str], None]  # (kind of the conversation)
RoleCheck = Callable[[str, str | None], None]  # (kind, role of the user concerned or None)
AdminCheck = Callable[[str, str | None, str | None], None]  # (kind, actor's role, target's role)
RecallCheck = Callable[[str, str | None, bool, int], None]  # (kind, actor's role, own message?, age in ms)


class Messages(Protocol):
    """Every event of every conversation is a message with a ``seq`` (invariants 1-6)."""

    def append(
        self, conv: str, sender: str, cid: str | None, ts: int, data: bytes, effects: tuple[Effect, ...]
    ) -> Write[Appended]:
        """A text message (``data``: its packed content, ``records.pack``) with the
        next seq and pos; idempotent on (sender, cid); ``NOT_FOUND`` for an unknown
        conversation. ``effects``: the kind's same-transaction effects. Writes
        nothing before it can fail (``savepoint=False``)."""
        ...

    def recall(
        self, conv: str, seq: int, actor: str, author: dict[str, Any], ts: int, check: RecallCheck
    ) -> Write[SystemMessage]:
        """Wipe a text message's content (its seq stays) and append a ``recall``
        system message; ``check`` decides who may, from the actor's role.
        Refusals, in this order: NOT_FOUND (no such text message), NOT_MEMBER
        (the actor), CONFLICT (recalled already), then ``check``'s."""
        ...

    async def history(self, conv: str, before: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` wire messages with seq < ``before``, oldest first, and
        whether older ones remain (a reply stops at about 256 KiB of content)."""
        ...

    async def find(self, sender: str, cid: str) -> Appended | None: ...

    async def head(self) -> int:
        """The highest committed ``pos``."""
        ...

    async def epoch(self) -> str:
        """The name of this store's position space, fixed when the store is
        created (a copy keeps it; another store has its own)."""
        ...

    async def since(
        self, user: str, pos: int, limit: int
    ) -> tuple[list[dict[str, Any]], list[ConvCursor], bool]:
        """Catch-up: messages after ``pos`` of the user's conversations (from each
        one's join on), in pos order; the cursors of the conversations that
        changed; whether more remain. Cost proportional to what changed."""
        ...

    async def between(self, conv: str, after: int, before: int) -> list[dict[str, Any]]:
        """Wire messages with after < seq < before, oldest first (gap fill)."""
        ...


class Conversations(Protocol):
    """Conversations: kind, name, attributes, counters. ``kind`` and the id never
    change once created."""

    def open_dm(
        self,
        conv: str,
        kind: str,
        a: str,
        b: str,
        ts: int,
        known_peer: bool = False,
        quota: Quota | None = None,
    ) -> Write[ConvRecord]:
        """The pair's conversation, opened by ``a``, created (with both as
        members) on first open. In this order: BLOCKED when either side blocks
        the other; for a new conversation only: NOT_FOUND when ``known_peer`` and
        ``b`` was never seen (``Users``), RATE_LIMITED past ``quota``."""
        ...

    def create(
        self,
        kind: str,
        prefix: str,
        owner: str,
        author: dict[str, Any],
        name: str,
        attrs: dict[str, Any],
        ts: int,
        quota: Quota | None = None,
    ) -> Write[tuple[ConvRecord, SystemMessage]]:
        """A conversation with the id ``<prefix><n>`` (n counted per kind), the
        owner as its first member (role ``owner``) and a ``created`` message;
        RATE_LIMITED past ``quota``."""
        ...

    def announce(
        self, conv: str, actor: str, author: dict[str, Any], text: str, ts: int, check: AdminCheck
    ) -> Write[SystemMessage]: ...

    async def get(self, conv: str) -> ConvRecord | None: ...

    async def load(self, conv: str) -> ConvSnapshot | None:
        """What the hot path caches: kind, members with roles, mutes."""
        ...

    async def listing(
        self, kind: str, category: str | None, after: str | None, limit: int
    ) -> tuple[list[ConvRecord], str | None]:
        """Conversations of ``kind`` by id, after the cursor; the next cursor."""
        ...


class Members(Protocol):
    """Stored membership: who is in a conversation, their role, read cursor and mute."""

    def join(self, conv: str, user: str, author: dict[str, Any], ts: int, check: KindCheck) -> Write[
        tuple[ConvRecord, SystemMessage, int]
    ]:
        """Refusals, in this order: ``check``'s (given the conversation's kind, ""
        if it does not exist), CONFLICT (a member already). The ``join`` message's
        seq becomes the member's join point (``sync`` starts there) and read cursor.
        A mute of this user in this conversation that has not ended binds the new
        member again: the third value is its end (ms; 0 if none)."""
        ...

    def leave(self, conv: str, user: str, author: dict[str, Any], ts: int, check: RoleCheck) -> Write[SystemMessage]:
        """``check`` (given the kind and the user's role, None if not a member)
        decides; the ``leave`` message is appended before the member goes."""
        ...

    def set_role(
        self, conv: str, actor: str, author: dict[str, Any], user: str, role: str, ts: int, check: AdminCheck
    ) -> Write[SystemMessage]:
        """``check`` gets the kind and both roles as read in the transaction (None:
        not a member) and refuses alone; then the role changes and a ``role``
        message is appended. ``mute`` likewise."""
        ...

    def mute(
        self, conv: str, actor: str, author: dict[str, Any], user: str, until: int, ts: int, check: AdminCheck
    ) -> Write[SystemMessage]:
        """Mute ``user`` until ``until`` (0: unmute). The mute outlives the
        membership: leaving and joining again does not lift it."""
        ...

    def mark_read(self, conv: str, user: str, seq: int) -> Write[tuple[int, int, bool]]:
        """Move the read cursor up to ``seq`` (never back, never past the last
        message): (read_seq, unread, whether it moved)."""
        ...

    async def convs_of(self, user: str) -> list[str]: ...

    async def joined_seq(self, conv: str, user: str) -> int | None:
        """The seq of the user's join (0 for a DM's members), or None when the
        user is not a member."""
        ...

    async def page(self, conv: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]: ...

    async def view(self, user: str, after: str | None, limit: int) -> tuple[list[MemberView], str | None]:
        """The user's conversations with their own cursor, by id."""
        ...


class Users(Protocol):
    """The users the server has seen (authenticated once, or provisioned)."""

    def seen(self, user: str, type: str, name: str, ts: int) -> Write[None]:
        """Record ``user`` (idempotent; type and name follow the latest token)."""
        ...

    async def known(self, user: str) -> bool: ...

    def revoke(self, user: str, before: int) -> Write[int]:
        """Refuse ``user``'s tokens issued before ``before`` (unix seconds); the
        stored time only moves forward. Returns the time now in force."""
        ...

    def kick(self, user: str, at_ms: int) -> Write[int]:
        """Sign ``user`` out of every socket whose auth began before ``at_ms`` (the
        stored time only moves forward). Returns the time now in force."""
        ...

    async def sign_outs(self, user: str) -> tuple[int, int]:
        """(tokens issued before this are refused, unix s; sockets whose auth began
        before this are closed, ms); (0, 0) for a user never signed out."""
        ...


class Blocks(Protocol):
    def set(self, blocker: str, blocked: str, on: bool) -> Write[None]: ...

    async def between(self, a: str, b: str) -> bool:
        """Whether either of the two blocks the other."""
        ...


class Ledger(Protocol):
    """Points (invariant 8): append-only entries keyed by their idempotency key."""

    def apply_awards(self, awards: Sequence[Any], ts: int) -> Write[list[Entry]]:
        """Hook awards (``chatd.points.Award``); entries that were new."""
        ...

    def tip(self, user: str, tid: str, conv: str, seq: int, amount: int, ts: int) -> Write[dict[str, Any]]:
        """Move points to the author of text message (conv, seq), idempotent on
        (user, tid). In this order: a known tid returns the original with
        ``dup``; NOT_MEMBER; MUTED (the tipper is muted there); NOT_FOUND (no such
        text message); BAD_REQUEST (own message); INSUFFICIENT. Writes a
        ``tip.sent`` event."""
        ...

    def send_red_packet(
        self,
        user: str,
        author: dict[str, Any],
        rid: str,
        conv: str,
        total: int,
        shares: int,
        split: str,
        amounts: Callable[[], list[int]],
        ts: int,
        ttl_ms: int,
    ) -> Write[tuple[dict[str, Any], SystemMessage | None]]:
        """Idempotent on (user, rid): a known rid returns the original with
        ``dup``; then NOT_MEMBER, MUTED, NOT_FOUND; ``amounts()`` draws the shares (its
        BAD_REQUEST); INSUFFICIENT. Appends a ``redpacket`` system message and
        writes a ``redpacket.sent`` event."""
        ...

    def claim_red_packet(self, user: str, pid: str, ts: int) -> Write[dict[str, Any]]:
        """One share per user, first come first served. In this order: NOT_FOUND
        (no such packet), NOT_MEMBER, a second claim returns the first with
        ``dup``, CONFLICT (expired, or every share taken)."""
        ...

    def expire_red_packets(self, now: int) -> Write[dict[str, dict[str, Any]]]:
        """Refund what expired packets hold; per sender the ``points`` push."""
        ...

    async def balance(self, user: str) -> dict[str, int]: ...

    async def recent(self, user: str, before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]: ...

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]: ...


class Outbox(Protocol):
    """Interaction events (invariant 7) and the cursors of their consumers. A
    message row is itself the outbox entry of ``message.sent`` and of a join;
    other interactions write an event row in their own transaction."""

    async def messages_after(self, pos: int, limit: int) -> list[MessageRow]: ...

    async def events_after(self, id: int, limit: int) -> list[EventRow]: ...

    def init_cursors(self, names: Sequence[str]) -> Write[None]:
        """A consumer seen for the first time starts at the current head."""
        ...

    async def cursors(self, name: str) -> dict[str, int]: ...

    def commit(
        self, name: str, awards: Sequence[Any], cursors: dict[str, int], ts: int, failure: HookFailure | None
    ) -> Write[dict[str, dict[str, Any]]]:
        """A consumer's awards and its cursors in one transaction (exactly-once
        awards); per user who got points, the ``points`` push."""
        ...


class Notifications(Protocol):
    """Offline notifications (``chatd/notify``): the planner reads message rows
    past its cursor and stores what it decided with the cursor in one
    transaction, so each notification exists once whatever crashes; each hook
    reads them past a cursor of its own (at least once; it deduplicates on the
    notification's key). Users' settings: a global mute, quiet hours, a mute
    per conversation."""

    def init(self, names: Sequence[str]) -> Write[None]:
        """First run: the planner's cursor at the head, a new hook's at the newest notification."""
        ...

    async def cursors(self) -> tuple[int, dict[str, int]]:
        """The planner's cursor (a pos) and each hook's (a notification id)."""
        ...

    async def sources(self, after: int, limit: int) -> tuple[int, list[NotifySource]]:
        """The text messages among the next ``limit`` message rows after pos
        ``after`` (not recalled), and the last pos read (``after`` if none)."""
        ...

    async def audience(self, convs: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per conversation, its stored members and their read cursors."""
        ...

    async def context(self, pairs: Sequence[tuple[str, str]], senders: Sequence[tuple[str, str]]) -> NotifyContext: ...

    async def due(self, before: int, limit: int) -> list[tuple[NotifyState, int]]: ...

    def plan(self, cursor: int | None, notes: Sequence[Notification], states: Sequence[NotifyState]) -> Write[int]:
        """Notifications (INSERT once per key), coalescing state and the planner's
        cursor (None: unchanged) in one transaction; how many were new."""
        ...

    def prune(self, before: int, idle_before: int) -> Write[int]: ...

    async def after(self, id: int, limit: int) -> list[Notification]: ...

    def delivered(self, name: str, last_id: int, failure: HookFailure | None, ts: int) -> Write[None]: ...

    async def prefs(self, user: str) -> NotifyPrefs: ...

    async def conv_mute(self, user: str, conv: str) -> int: ...

    def set_prefs(
        self, user: str, muted_until: int | None, quiet: tuple[int, int, int] | None, quiet_off: bool
    ) -> Write[NotifyPrefs]:
        """Change what is given (``quiet``: from, to, utc_offset; ``quiet_off``
        clears quiet hours); the settings after."""
        ...

    def set_conv_mute(self, user: str, conv: str, until: int) -> Write[int]: ...


class Leases(Protocol):
    def take(self, name: str, owner: str, now: int, ms: int) -> Write[tuple[bool, int]]:
        """Take or renew lease ``name`` until ``now + ms`` unless another owner
        holds it unexpired: (held by ``owner`` now, when it runs out)."""
        ...


ServiceMember = tuple[str, str, tuple[str, ...] | None]  # user, role (staff/bot), badges (None: none given)


class ServiceGroups(Protocol):
    """Service groups (docs/service-groups.md): one per owner, made and changed by
    a backend. Every write re-checks its preconditions in its transaction."""

    def provision(
        self,
        conv: str,
        kind: str,
        owner: str,
        fellow: str,
        team: Sequence[ServiceMember] | None,
        team_roles: tuple[str, ...],
        name: str | None,
        tags: dict[str, str] | None,
        actor: str,
        author: dict[str, Any],
        ts: int,
    ) -> Write[tuple[ConvRecord, SystemMessage | None, bool, list[dict[str, str]], list[str]]]:
        """Create the owner's group (``created`` True, one ``created`` event naming
        every member), or reconcile it: the members whose role is in ``team_roles``
        become exactly ``team`` (one ``members`` event, if anything changed); a
        ``name`` or ``tags`` given replace the stored ones. CONFLICT when the group's
        Fellow is not ``fellow``. Returns (group, event, created, added, removed)."""
        ...

    def change_members(
        self,
        conv: str,
        adds: Sequence[ServiceMember],
        removes: Sequence[str],
        actor: str,
        author: dict[str, Any],
        ts: int,
        check: KindCheck,
    ) -> Write[tuple[ConvRecord, SystemMessage | None, list[dict[str, str]], list[str]]]:
        """Members join, change role or badges, leave; FORBIDDEN for the owner or
        the Fellow. Returns (group, event or None, added, removed)."""
        ...

    def handover(
        self, conv: str, fellow: str, actor: str, author: dict[str, Any], ts: int, check: KindCheck
    ) -> Write[tuple[ConvRecord, SystemMessage | None, str, bool]]:
        """A new Fellow (the previous one stays, as staff). Returns (group, event or
        None when ``fellow`` is the Fellow already, previous Fellow, joined now)."""
        ...

    def post(
        self, conv: str, actor: str, author: dict[str, Any], cid: str, event: dict[str, Any], ts: int, check: KindCheck
    ) -> Write[tuple[Appended, SystemMessage | None]]:
        """A system message carrying ``event``, idempotent on (actor, cid)."""
        ...


DeskActor = tuple[str, dict[str, Any], bool]  # user, author, whether a backend (the admin scope) acts


class ServiceDesk(Protocol):
    """Service requests, episodes, ratings, the staff inbox and the overdue scan
    (docs/service-groups.md). Writes check the actor's role in their transaction."""

    def open_request(
        self, conv: str, actor: DeskActor, rtype: str, note: str, rid: str, ts: int, policy: Any, check: KindCheck
    ) -> Write[tuple[dict[str, Any], SystemMessage | None]]:
        """The owner's typed request (idempotent on ``rid``); it opens an episode
        and starts the clock where none runs."""
        ...

    def set_status(
        self, conv: str, number: int, status: str, actor: DeskActor, ts: int, check: KindCheck
    ) -> Write[tuple[dict[str, Any], SystemMessage | None]]:
        """Move a request on (CONFLICT for a transition the statuses do not allow)."""
        ...

    def close_episode(
        self, conv: str, actor: DeskActor, ts: int, policy: Any, check: KindCheck, episode: int | None
    ) -> Write[tuple[int | None, SystemMessage | None]]:
        """Close the open episode (if given, only if ``episode`` is the open one);
        (None, None) when nothing closed."""
        ...

    def rate(
        self, conv: str, episode: int, stars: int, comment: str, actor: DeskActor, ts: int, policy: Any,
        check: KindCheck,
    ) -> Write[tuple[dict[str, int], SystemMessage | None, bool]]:
        """The owner's rating of a closed episode, once, within the window; returns
        the credit shares (millionths) stored with it, the event, and whether it
        was the same rating again (then nothing changed)."""
        ...

    def claim(self, conv: str, seq: int, bot: str, ts: int, policy: Any, check: KindCheck) -> Write[bool]:
        """A bot's claim on a customer message (first wins; True: this bot's already)."""
        ...

    def to_human(
        self, conv: str, actor: DeskActor, text: str, ts: int, check: KindCheck
    ) -> Write[tuple[str, SystemMessage | None]]:
        """A bot hands the episode over; returns the Fellow and the event (None:
        handed over already)."""
        ...

    def alert(self, now: int, escalate_ms: int, badge: str, limit: int) -> Write[list[dict[str, Any]]]:
        """Mark overdue groups alerted (level 1, then 2) and say whom to alert."""
        ...

    def close_idle(
        self, before: int, actor: DeskActor, ts: int, policy: Any, limit: int
    ) -> Write[list[SystemMessage]]:
        """Close episodes idle since ``before``."""
        ...

    async def requests(self, conv: str, open_only: bool) -> list[dict[str, Any]]: ...

    async def report(self, since: int, until: int, by: str = "person") -> list[dict[str, Any]]:
        """Per person or per group: episodes, ratings, credit and response figures of a period."""
        ...

    async def rows(self, convs: Sequence[str]) -> list[dict[str, Any]]:
        """The group-level part of inbox rows."""
        ...

    async def inbox(
        self, user: str, filter_: str, after: tuple[int, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A staff member's inbox page and the next page's cursor."""
        ...


class Campaigns(Protocol):
    """Care campaigns: made by a backend, posted in chunks, claimed by owners."""

    def create(
        self, actor: str, author: dict[str, Any], cid: str, card: dict[str, Any], tags: dict[str, str],
        stock: int | None, points: int, ts: int,
    ) -> Write[dict[str, Any]]:
        """Store a campaign and count its targets (idempotent on (actor, cid))."""
        ...

    def post_chunk(self, ts: int, limit: int) -> Write[tuple[list[SystemMessage], bool]]:
        """Post the oldest unfinished campaign into its next groups; (messages, more to do)."""
        ...

    def claim(
        self, user: str, conv: str, campaign: int, ts: int
    ) -> Write[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
        """An owner's claim, once, while stock lasts; (reply, points push per user)."""
        ...

    async def get(self, campaign: int) -> dict[str, Any] | None: ...


class LiveSessions(Protocol):
    """Live Q&A sessions and polls (docs/live-sessions.md): the writes decide who
    may do what from the roles read in their transaction; see
    ``chatd/store/sqlite/live.py`` for each one's rules."""

    # -- writes

    def create(self, creator: str, cid: str, spec: dict[str, Any], host: bool, ts: int) -> Write[
        tuple[dict[str, Any], bool]
    ]: ...

    def update(self, session: str, actor: str, admin: bool, fields: dict[str, Any]) -> Write[dict[str, Any]]: ...

    def set_state(self, session: str, actor: str, admin: bool, state: str, ts: int) -> Write[
        tuple[dict[str, Any], bool, list[str]]
    ]: ...

    def follow(self, session: str, user: str, on: bool) -> Write[bool]: ...

    def mute(self, session: str, actor: str, admin: bool, user: str, until: int) -> Write[int]: ...

    def raise_peak(self, session: str, viewers: int) -> Write[None]: ...

    def attend(self, rows: list[tuple[str, str]], ts: int) -> Write[int]: ...

    def chat(self, session: str, room: str, user: str, author: dict[str, Any], cid: str, text: str, ts: int) -> Write[
        dict[str, Any] | None
    ]: ...

    def ask(
        self, session: str, room: str, user: str, author: dict[str, Any], cid: str, text: str, anonymous: bool,
        ts: int,
    ) -> Write[tuple[Any, int, bool]]: ...

    def vote(self, session: str, qid: int, user: str, on: bool, ts: int) -> Write[tuple[int, int, bool]]: ...

    def moderate(self, session: str, qid: int, actor: str, admin: bool, action: str) -> Write[tuple[Any, int, bool]]: ...

    def merge(self, session: str, qid: int, into: int, actor: str, admin: bool) -> Write[tuple[Any, Any, int, bool]]: ...

    def answer(
        self, session: str, qid: int, actor: str, admin: bool, text: str | None, live: bool, ts: int
    ) -> Write[tuple[Any, int, bool]]: ...

    def pin(self, session: str, qid: int, actor: str, admin: bool, on: bool) -> Write[tuple[Any, int, bool]]: ...

    def poll_create(
        self, conv: str, actor: str, author: dict[str, Any], admin: bool, cid: str, spec: dict[str, Any], ts: int
    ) -> Write[tuple[dict[str, Any], Any, bool]]: ...

    def poll_vote(self, poll: int, user: str, type_: str, options: list[int], ts: int) -> Write[
        tuple[dict[str, Any], int, bool]
    ]: ...

    def poll_close(self, poll: int, actor: str, admin: bool, ts: int) -> Write[tuple[dict[str, Any], bool]]: ...

    # -- reads

    async def session(self, session: str) -> dict[str, Any] | None: ...

    async def roles(self, session: str) -> dict[str, str]: ...

    async def listing(self, state: str | None, after: str | None, limit: int) -> list[dict[str, Any]]: ...

    async def questions(
        self, session: str, states: tuple[str, ...], order: str, limit: int, after: int = 0
    ) -> list[Any]: ...

    async def viewer(self, session: str, user: str) -> tuple[list[int], dict[int, list[int]], bool]: ...

    async def lines(self, room: str, limit: int) -> list[dict[str, Any]]: ...

    async def line(self, sender: str, cid: str) -> dict[str, Any]: ...

    async def member(self, conv: str, user: str) -> bool: ...

    async def poll(self, poll: int) -> dict[str, Any] | None: ...

    async def polls_of(self, conv: str, limit: int = 20) -> list[dict[str, Any]]: ...

    async def figures(self, session: str) -> dict[str, int]: ...


class Store(Protocol):
    """An engine: its repositories, and the batch transaction they all write through."""

    @property
    def messages(self) -> Messages: ...

    @property
    def live(self) -> LiveSessions: ...

    @property
    def conversations(self) -> Conversations: ...

    @property
    def members(self) -> Members: ...

    @property
    def users(self) -> Users: ...

    @property
    def blocks(self) -> Blocks: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def leases(self) -> Leases: ...

    @property
    def notify(self) -> Notifications: ...

    @property
    def service(self) -> ServiceGroups: ...

    @property
    def desk(self) -> ServiceDesk: ...

    @property
    def campaigns(self) -> Campaigns: ...

    async def open(self) -> None:
        """Open, migrating to the current schema (the embedded default migrates on start)."""
        ...

    async def close(self) -> None: ...

    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        """Run ``ops`` in one transaction. Returns each op's result (a value, or
        the exception that op raised, its writes undone) and the head ``pos``
        after the commit. Raises :class:`StoreUnavailable` when the transaction
        as a whole failed: then nothing was committed."""
        ...


__all__ = [
    "AdminCheck",
    "Blocks",
    "Campaigns",
    "Conversations",
    "KindCheck",
    "Leases",
    "Ledger",
    "Members",
    "Messages",
    "Outbox",
    "RecallCheck",
    "RequestError",
    "RoleCheck",
    "ServiceDesk",
    "ServiceGroups",
    "Store",
    "StoreUnavailable",
    "Users",
    "Write",
]
