"""A service group's clocks, in the transaction of each text message in it
(the kind's :class:`~chatd.store.records.ServiceClock` effect; the rules are in
docs/service-groups.md, "Response clocks").

- The owner's message opens an episode if none is open, and starts the clock
  if it is not running: ``waiting_since`` is the oldest customer message no
  staff member has answered, ``due`` comes from the policy.
- A staff reply in an open episode is recorded (reply shares and response
  times are computed from these rows) and stops the clock; the episode's state
  becomes ``human``.
- A bot's reply is recorded too; it stops the clock only if the policy says so.

It runs after the message's INSERT succeeded and never refuses: a message is
never lost to its bookkeeping.
"""

from __future__ import annotations

import logging
from typing import Any

from .engine import Tx

log = logging.getLogger("chatd.store")

OWNER, FELLOW, STAFF, BOT = "owner", "fellow", "staff", "bot"
STATE_COLUMNS = "episode, open, state, waiting_since, due, answered, urgent"


def open_episode(tx: Tx, conv: str, seq: int, ts: int, episode: int) -> int:
    """A new episode (the previous one closed): bots answer first where the group
    has any, else it waits for a human. Returns its number."""
    episode += 1
    has_bot = tx.execute("SELECT 1 FROM members WHERE conv = ? AND role = 'bot' LIMIT 1", (conv,)).fetchone()
    fellow = tx.execute("SELECT fellow FROM conversations WHERE id = ?", (conv,)).fetchone()[0]
    tx.execute(
        "INSERT INTO service_episodes(conv, episode, opened_ts, opened_seq, fellow) VALUES (?, ?, ?, ?, ?)",
        (conv, episode, ts, seq, fellow),
    )
    tx.execute(
        "UPDATE service_state SET rev = rev + 1, episode = ?, open = 1, state = ?, answered = 0, last_activity = ? WHERE conv = ?",
        (episode, "bot" if has_bot else "human", ts, conv),
    )
    return episode


def start_waiting(
    tx: Tx, conv: str, seq: int, ts: int, policy: Any, urgent: bool, answered: bool, activity: bool = False
) -> None:
    """The customer waits from ``ts``; ``activity``: it is the episode's latest
    activity too (one UPDATE for both)."""
    tx.execute(
        "UPDATE service_state SET rev = rev + 1, waiting_since = ?, waiting_seq = ?, due = ?, alerted = 0"
        f"{', last_activity = ?' if activity else ''} WHERE conv = ?",
        (ts, seq, policy.due(ts, urgent, answered), *((ts,) if activity else ()), conv),
    )


def on_text(tx: Tx, conv: str, sender: str, seq: int, ts: int, policy: Any) -> None:
    """The clock effect, in a savepoint of its own: were it ever to fail, the
    message stays stored and acknowledged (and is logged); only the group's
    bookkeeping of it is lost, never the batch it commits with."""
    tx.execute("SAVEPOINT clock")
    try:
        _on_text(tx, conv, sender, seq, ts, policy)
    except Exception:
        log.exception("the clock of %s lost message %d (the message itself is stored)", conv, seq)
        tx.execute("ROLLBACK TO clock")
    tx.execute("RELEASE clock")


def _on_text(tx: Tx, conv: str, sender: str, seq: int, ts: int, policy: Any) -> None:
    row = tx.execute(f"SELECT {STATE_COLUMNS} FROM service_state WHERE conv = ?", (conv,)).fetchone()
    role_row = tx.execute("SELECT role FROM members WHERE conv = ? AND user = ?", (conv, sender)).fetchone()
    if row is None or role_row is None:  # pragma: no cover - every group has its row; senders are members
        return
    episode, is_open, _, waiting_since, due, answered, urgent = row
    role = role_row[0]
    if role == OWNER:
        if not is_open:
            episode = open_episode(tx, conv, seq, ts, episode)
            answered = 0
        if waiting_since is None:  # the clock starts (open_episode set last_activity already)
            start_waiting(tx, conv, seq, ts, policy, urgent > 0, bool(answered), activity=True)
        else:
            tx.execute("UPDATE service_state SET rev = rev + 1, last_activity = ? WHERE conv = ?", (ts, conv))
        return
    human = role in (FELLOW, STAFF)
    if not is_open:  # staff writing outside an episode (a greeting, a follow-up): no clock runs,
        if human:  # but bots stay quiet after it as after any staff reply
            tx.execute("UPDATE service_state SET rev = rev + 1, last_staff = ? WHERE conv = ?", (ts, conv))
        return
    stops = waiting_since is not None and (human or policy.bot_reply_stops_clock)
    first = stops and not answered
    tx.execute(
        "INSERT OR IGNORE INTO service_replies(conv, seq, episode, user, role, ts, waited, late, first)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (conv, seq, episode, sender, role, ts, ts - waiting_since if stops else None,
         int(stops and ts > due), int(first)),
    )
    sets = "last_activity = ?"
    if stops:
        sets += ", waiting_since = NULL, waiting_seq = NULL, due = NULL, alerted = 0, answered = 1"
    if human:  # the episode is a human's now; the customer's next message runs the next-response clock
        sets += ", state = 'human', last_staff = ?" + ("" if stops else ", answered = 1")  # one assignment each
    tx.execute(f"UPDATE service_state SET rev = rev + 1, {sets} WHERE conv = ?", (ts, ts, conv) if human else (ts, conv))
