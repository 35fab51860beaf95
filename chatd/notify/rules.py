"""Who gets an offline notification, when, and how: pure decisions, no I/O.

The planner (``worker.py``) reads the messages and what it needs about their
recipients, and these functions decide:

- **targets** (:func:`targets`): the conversation's kind says whom every
  message notifies: every other member (a DM), the owner of the others'
  messages (a service group: every staff or bot reply), or nobody but those it
  mentions (a circle: ``@user``, and ``@all`` by an admin); never the sender;
- **skips** (:func:`skip`): a recipient with a connected device, or whose last
  device went only after the message was sent (it was pushed to them live), one who muted notifications or this conversation, one who has
  read the message already (on another device), one who blocks the sender;
- **coalescing** (:class:`Planner`): at most one notification per user and
  conversation per interval; messages inside it are counted and go out as one
  when it has passed (:meth:`Planner.flush`), if still unread and still offline;
- **quiet hours** (:func:`quiet`): inside them a notification is *silent* (the
  bridge delivers it without sound), not dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

from ..store.records import Notification, NotifyContext, NotifyPrefs, NotifySource, NotifyState

PREVIEW_MAX = 120  # code points of the message text in a notification
DAY_MIN = 1440

MESSAGE = "message"  # the kind has every message notify them (a DM's peer, a service group's owner)
MENTION = "mention"
MENTION_ALL = "mention_all"


def targets(src: NotifySource, notified: Collection[str] | None, members: Mapping[str, int]) -> dict[str, str]:
    """Recipient -> reason. ``notified``: whom the kind has every message notify
    (None: every member, as in a DM; a service group: the owner, of the others'
    messages). A mention is named as such even where every message notifies;
    only current members are notified."""
    out: dict[str, str] = {}
    if notified is None or src.mention_all:
        reason = MESSAGE if notified is None else MENTION_ALL
        out = dict.fromkeys(members, reason)
    else:
        for user in notified:
            if user in members:
                out[user] = MESSAGE
    for user in src.mentions:
        if user in members:
            out[user] = MENTION
    out.pop(src.sender, None)
    return out


def quiet(prefs: NotifyPrefs, now_ms: int) -> bool:
    """Whether ``now_ms`` falls in the user's quiet hours, [from, to) minutes of
    their local day (wrapping midnight when from > to)."""
    start, end = prefs.quiet_from, prefs.quiet_to
    if start is None or end is None or start == end:
        return False
    minute = (now_ms // 60_000 + prefs.utc_offset) % DAY_MIN
    return start <= minute < end if start < end else minute >= start or minute < end


def skip(
    user: str, conv: str, sender: str, seq: int, read_seq: int, online: Collection[str], ctx: NotifyContext, now: int,
    sent_at: int | None = None, gone: Mapping[str, int] | None = None,
) -> str | None:
    """Why ``user`` gets no notification of message ``seq`` (sent at
    ``sent_at``), or None. ``gone``: when each offline user's last device went;
    one that went after the message was sent had it pushed live."""
    if user in online:
        return "online"
    if sent_at is not None and gone is not None and gone.get(user, -1) > sent_at:
        return "delivered"
    if ctx.prefs.get(user, NotifyPrefs()).muted_until > now or ctx.conv_mutes.get((user, conv), 0) > now:
        return "muted"
    if read_seq >= seq:
        return "read"
    if (user, sender) in ctx.blocked:
        return "blocked"
    return None


def preview(text: str) -> str:
    return text if len(text) <= PREVIEW_MAX else text[: PREVIEW_MAX - 1] + "\u2026"


class Planner:
    """One planning round: feed it messages (:meth:`message`) and due coalesced
    state (:meth:`flush`); it gathers the notifications and the state to store."""

    def __init__(
        self,
        ctx: NotifyContext,
        online: Collection[str],
        now: int,
        window_ms: int,
        epoch: str = "",
        gone: Mapping[str, int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.online = online
        self.gone = gone or {}
        # keys name the store's epoch: after a restore from a backup seqs repeat, and a
        # bridge that deduplicates on the key must not drop the new notifications
        self.prefix = f"{epoch}:" if epoch else ""
        self.now = now
        self.window_ms = window_ms
        self.notes: list[Notification] = []
        self.changed: dict[tuple[str, str], NotifyState] = {}
        self.outcomes: Counter[str] = Counter()

    def _emit(self, st: NotifyState, count: int) -> None:
        prefs = self.ctx.prefs.get(st.user, NotifyPrefs())
        self.notes.append(
            Notification(
                f"{self.prefix}{st.user}:{st.conv}:{st.last_seq}", st.user, st.conv, st.conv_kind, st.reason, st.last_seq, count,
                st.sender, st.sender_name, st.preview, quiet(prefs, self.now), self.now,
            )
        )
        self.outcomes["silent" if self.notes[-1].silent else "emitted"] += 1
        st.last_at, st.pending = self.now, 0
        self.changed[(st.user, st.conv)] = st

    def message(self, src: NotifySource, notified: Collection[str] | None, members: Mapping[str, int]) -> None:
        for user, reason in targets(src, notified, members).items():
            why = skip(
                user, src.conv, src.sender, src.seq, members[user], self.online, self.ctx, self.now, src.ts, self.gone
            )
            if why is not None:
                self.outcomes[why] += 1
                continue
            key = (user, src.conv)
            st = self.ctx.states.get(key)
            carried = 0
            if st is None:
                st = self.ctx.states[key] = NotifyState(user, src.conv, src.conv_kind, 0)
            elif self.now - st.last_at < self.window_ms:
                st.pending += 1  # inside the interval: counted, goes out with the flush
                self._describe(st, src, reason)
                self.changed[key] = st
                self.outcomes["coalesced"] += 1
                continue
            else:
                carried = st.pending  # an interval passed with these not flushed yet
            self._describe(st, src, reason)
            self._emit(st, carried + 1)

    @staticmethod
    def _describe(st: NotifyState, src: NotifySource, reason: str) -> None:
        # a mention stays a mention while later plain messages are coalesced with it
        if not (st.pending > 1 and st.reason == MENTION and reason != MENTION):
            st.reason = reason
        st.last_seq, st.sender, st.sender_name, st.preview = src.seq, src.sender, src.sender_name, preview(src.text)

    def flush(self, due: list[tuple[NotifyState, int]]) -> None:
        """Coalesced messages whose interval passed: one notification for them
        all, unless the user came online, read them, left or muted meanwhile."""
        for st, read_seq in due:
            self.ctx.states[(st.user, st.conv)] = st
            why = "left" if read_seq < 0 else skip(
                st.user, st.conv, st.sender, st.last_seq, read_seq, self.online, self.ctx, self.now
            )
            if why is None:
                self._emit(st, st.pending)
            else:
                self.outcomes[why] += 1
                st.pending = 0
                self.changed[(st.user, st.conv)] = st
