"""The op table: the arguments of every request op, and the one function that
checks them; per op, whether a retry is safe and which scope it needs.

``OPS`` *is* the specification of request arguments: protocol/README.md
describes the same fields in prose, and both server and client call
:func:`check_args` so that a bad request is refused identically everywhere.
``RULES`` is read by the server (the scope a caller needs) and by the client
(which ops it resends after a reconnect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import Err, RequestError

USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
CONV_ID_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,140}$")
CATEGORIES = ("city", "interest", "profession", "family")
PRESENCE_STATUSES = ("online", "away")
USER_TYPES = ("fan", "deposit", "owner", "staff", "bot")
TAG_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
CARD_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.]{0,31}$")
URL_RE = re.compile(r"^(https?|chatd|app)://[^\s\x00-\x1f]{1,2040}$")
REQUEST_TYPES = ("maintenance", "road_service", "charging", "test_drive", "rescue")  # rescue is urgent
REQUEST_STATUSES = ("open", "accepted", "in_progress", "done", "cancelled")
INBOX_FILTERS = ("all", "waiting", "needs_human", "mine")
SERVICE_MEMBER_ROLES = ("staff", "bot")  # what a backend adds (the owner and the Fellow come with the group)
MAX_BADGES = 8
LIVE_STATES = ("scheduled", "live", "ended", "archived")
QUESTION_STATES = ("pending", "open", "hidden", "rejected", "answered", "dismissed", "merged")
ROOM_RE = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_ROOMS = 65  # a main venue and 64 sub-venues (NIO Day)
MAX_POLL_OPTIONS = 10


@dataclass(frozen=True, slots=True)
class Field:
    kind: str  # "str", "int", "bool", "user", "conv", "users", "enum"
    required: bool = False
    min: int = 0
    max: int = 0
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> None:
        kind = self.kind
        if kind in ("str", "user", "conv", "enum"):
            if not isinstance(value, str):
                raise _bad(name, "must be a string")
            if kind == "user" and not USER_ID_RE.fullmatch(value):
                raise _bad(name, "must be a user id ([A-Za-z0-9_.@-], 1-64 chars)")
            if kind == "conv" and not CONV_ID_RE.fullmatch(value):
                raise _bad(name, "must be a conversation id")
            if kind == "enum" and value not in self.choices:
                raise _bad(name, "must be one of " + ", ".join(self.choices))
            if kind == "str" and not self.min <= len(value) <= self.max:
                raise _bad(name, f"must have {self.min}-{self.max} characters")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad(name, "must be an integer")
            if not self.min <= value <= self.max:
                raise _bad(name, f"must be in [{self.min}, {self.max}]")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise _bad(name, "must be true or false")
        elif kind == "users":
            if not isinstance(value, list) or not self.min <= len(value) <= self.max:
                raise _bad(name, f"must be a list of {self.min}-{self.max} user ids")
            for item in value:
                if not isinstance(item, str) or not USER_ID_RE.fullmatch(item):
                    raise _bad(name, "must contain user ids only")
        elif kind == "rooms":
            if not isinstance(value, list) or not self.min <= len(value) <= self.max:
                raise _bad(name, f"must be a list of {self.min}-{self.max} room names")
            for item in value:
                if not isinstance(item, str) or not ROOM_RE.fullmatch(item):
                    raise _bad(name, "must contain room names ([a-z0-9_], 1-32 chars) only")
            if len(set(value)) != len(value):
                raise _bad(name, "names a room twice")
        elif kind == "room":
            if not isinstance(value, str) or not ROOM_RE.fullmatch(value):
                raise _bad(name, "must be a room name ([a-z0-9_], 1-32 chars)")
        elif kind == "options":
            if not isinstance(value, list) or not self.min <= len(value) <= self.max:
                raise _bad(name, f"must be a list of {self.min}-{self.max} options")
            for item in value:
                _short(name, item, 1, 80)
            if len(set(value)) != len(value):
                raise _bad(name, "repeats an option")
        elif kind == "choices":
            if not isinstance(value, list) or not self.min <= len(value) <= self.max:
                raise _bad(name, f"must be a list of {self.min}-{self.max} option numbers")
            for item in value:
                if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < MAX_POLL_OPTIONS:
                    raise _bad(name, f"must contain option numbers in [0, {MAX_POLL_OPTIONS - 1}]")
            if len(set(value)) != len(value):
                raise _bad(name, "names an option twice")
        elif kind == "team":
            _check_team(name, value, self.max)
        elif kind == "tags":
            _check_tags(name, value)
        elif kind == "card":
            _check_card(name, value)
        else:  # pragma: no cover - table error
            raise AssertionError(kind)


def _bad(name: str, what: str) -> RequestError:
    return RequestError(Err.BAD_REQUEST, f"{name} {what}")


def _check_keys(name: str, value: Any, allowed: frozenset[str], required: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(name, "must be a map")
    for key in value:
        if key not in allowed:
            raise _bad(name, f"has an unknown field {str(key)[:64]!r}")
    for key in required:
        if key not in value:
            raise _bad(name, f"needs {key}")
    return value


def _short(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise _bad(name, f"must be a string of {lo}-{hi} characters")


_TEAM_KEYS, _TEAM_REQUIRED = frozenset({"user", "badges", "role"}), frozenset({"user"})


def _check_team(name: str, value: Any, most: int) -> None:
    """Members a backend adds to a service group: ``[{user, badges?, role?}]``."""
    if not isinstance(value, list) or len(value) > most:
        raise _bad(name, f"must be a list of at most {most} members")
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        _check_keys(where, item, _TEAM_KEYS, _TEAM_REQUIRED)
        user = item["user"]
        if not isinstance(user, str) or not USER_ID_RE.fullmatch(user):
            raise _bad(where + ".user", "must be a user id")
        if user in seen:
            raise _bad(name, f"names {user} twice")
        seen.add(user)
        badges = item.get("badges", [])
        if not isinstance(badges, list) or len(badges) > MAX_BADGES:
            raise _bad(where + ".badges", f"must be a list of at most {MAX_BADGES} badges")
        for badge in badges:
            _short(where + ".badges", badge, 1, 32)
        if "role" in item and item["role"] not in SERVICE_MEMBER_ROLES:
            raise _bad(where + ".role", "must be one of " + ", ".join(SERVICE_MEMBER_ROLES))


def _check_tags(name: str, value: Any) -> None:
    """A service group's tags (``{"city": "Shanghai", "model": "ES8"}``)."""
    if not isinstance(value, dict) or len(value) > 16:
        raise _bad(name, "must be a map of at most 16 tags")
    for key, tag in value.items():
        if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
            raise _bad(name, "keys must match [a-z][a-z0-9_]{0,31}")
        _short(f"{name}.{key}", tag, 1, 64)


_CARD_KEYS = frozenset({"type", "title", "body", "fields", "actions"})
_FIELD_KEYS, _ACTION_KEYS = frozenset({"label", "value"}), frozenset({"id", "label", "url"})


def _check_card(name: str, value: Any) -> None:
    """A structured card (protocol/README.md, "Cards")."""
    card = _check_keys(name, value, _CARD_KEYS, frozenset({"type", "title"}))
    if not isinstance(card["type"], str) or not CARD_TYPE_RE.fullmatch(card["type"]):
        raise _bad(name + ".type", "must match [a-z][a-z0-9_.]{0,31}")
    _short(name + ".title", card["title"], 1, 120)
    if "body" in card:
        _short(name + ".body", card["body"], 0, 1000)
    fields = card.get("fields", [])
    if not isinstance(fields, list) or len(fields) > 20:
        raise _bad(name + ".fields", "must be a list of at most 20 fields")
    for i, f in enumerate(fields):
        where = f"{name}.fields[{i}]"
        _check_keys(where, f, _FIELD_KEYS, _FIELD_KEYS)
        _short(where + ".label", f["label"], 1, 40)
        _short(where + ".value", f["value"], 0, 200)
    actions = card.get("actions", [])
    if not isinstance(actions, list) or len(actions) > 5:
        raise _bad(name + ".actions", "must be a list of at most 5 actions")
    ids: set[str] = set()
    for i, a in enumerate(actions):
        where = f"{name}.actions[{i}]"
        _check_keys(where, a, _ACTION_KEYS, frozenset({"id", "label"}))
        _short(where + ".id", a["id"], 1, 32)
        _short(where + ".label", a["label"], 1, 40)
        if a["id"] in ids:
            raise _bad(where + ".id", "repeats another action's id")
        ids.add(a["id"])
        if "url" in a and (not isinstance(a["url"], str) or not URL_RE.fullmatch(a["url"])):
            raise _bad(where + ".url", "must be an http(s):// or app:// URL of at most 2048 characters")


MAX_SEQ = 2**53 - 1
MAX_TIME_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the last date a token's times may name
S = Field  # short alias for the table

OPS: dict[str, dict[str, Field]] = {
    "auth": {"token": S("str", True, 1, 8192)},
    "auth.refresh": {"token": S("str", True, 1, 8192)},
    "ping": {},
    "dm.open": {"user": S("user", True)},
    "block": {"user": S("user", True)},
    "unblock": {"user": S("user", True)},
    "circle.create": {
        "name": S("str", True, 1, 64),
        "category": S("enum", True, choices=CATEGORIES),
        "description": S("str", False, 0, 500),
        "certified": S("bool"),
    },
    "circle.list": {
        "category": S("enum", choices=CATEGORIES),
        "after": S("conv"),
        "limit": S("int", False, 1, 100),
    },
    "circle.join": {"conv": S("conv", True)},
    "circle.leave": {"conv": S("conv", True)},
    "circle.role": {
        "conv": S("conv", True),
        "user": S("user", True),
        "role": S("enum", True, choices=("admin", "member")),
    },
    "circle.announce": {"conv": S("conv", True), "text": S("str", True, 0, 2000)},
    "circle.mute": {
        "conv": S("conv", True),
        "user": S("user", True),
        "seconds": S("int", True, 0, 30 * 86400),
    },
    "members": {
        "conv": S("conv", True),
        "after": S("user"),
        "limit": S("int", False, 1, 200),
    },
    "send": {
        "conv": S("conv", True),
        "cid": S("str", True, 1, 64),
        # The upper bound here is the protocol's; the server's configured
        # message length limit (default 4000) is checked separately -> too_long.
        "text": S("str", True, 1, 65536),
        "mentions": S("users", max=50),
        "mention_all": S("bool"),
    },
    "recall": {"conv": S("conv", True), "seq": S("int", True, 1, MAX_SEQ)},
    "history": {
        "conv": S("conv", True),
        "before": S("int", False, 1, MAX_SEQ),
        "limit": S("int", False, 1, 100),
    },
    "read": {"conv": S("conv", True), "seq": S("int", True, 0, MAX_SEQ)},
    "sync": {"since": S("int", True, 0, MAX_SEQ), "limit": S("int", False, 1, 1000)},
    "convs": {"after": S("conv"), "limit": S("int", False, 1, 200)},
    "presence.sub": {"users": S("users", True, 1, 100)},
    "presence.unsub": {"users": S("users", True, 1, 100)},
    "presence.set": {"status": S("enum", choices=PRESENCE_STATUSES), "on_duty": S("bool")},
    "typing": {"conv": S("conv", True)},
    "points.balance": {},
    "points.ledger": {"before": S("int", False, 1, MAX_SEQ), "limit": S("int", False, 1, 200)},
    "points.top": {"limit": S("int", False, 1, 200)},
    "tip": {
        "conv": S("conv", True),
        "seq": S("int", True, 1, MAX_SEQ),
        "amount": S("int", True, 1, 100_000),
        "tid": S("str", True, 1, 64),
    },
    "redpacket.send": {
        "conv": S("conv", True),
        "total": S("int", True, 1, 1_000_000),
        "shares": S("int", True, 1, 200),
        "split": S("enum", choices=("random", "equal")),
        "rid": S("str", True, 1, 64),
    },
    "redpacket.claim": {"id": S("str", True, 1, 32)},
    "notify.get": {"conv": S("conv")},
    "notify.set": {
        "conv": S("conv"),
        "muted_until": S("int", False, 0, MAX_SEQ),
        "quiet_from": S("int", False, 0, 1439),
        "quiet_to": S("int", False, 0, 1439),
        "utc_offset": S("int", False, -720, 840),
        "quiet_off": S("bool"),
    },
    # -- the admin API (a backend's token: the admin scope; docs/admin-api.md)
    "service.provision": {
        "owner": S("user", True),
        "fellow": S("user", True),
        "staff": S("team", max=50),
        "bots": S("users", max=10),
        "name": S("str", False, 1, 64),
        "tags": S("tags"),
    },
    "service.members": {"conv": S("conv", True), "add": S("team", max=50), "remove": S("users", max=50)},
    "service.handover": {"conv": S("conv", True), "fellow": S("user", True)},
    "service.post": {
        "conv": S("conv", True),
        "cid": S("str", True, 1, 64),
        "text": S("str", False, 1, 4000),
        "card": S("card"),
    },
    "admin.kick": {"user": S("user", True)},
    "admin.revoke": {"user": S("user", True), "before": S("int", False, 0, MAX_TIME_S)},
    # -- the service desk (owners, staff, and backends on the admin API)
    "service.request": {
        "conv": S("conv", True),
        "type": S("enum", True, choices=REQUEST_TYPES),
        "note": S("str", False, 0, 500),
        "rid": S("str", True, 1, 64),
    },
    "service.status": {
        "conv": S("conv", True),
        "id": S("int", True, 1, MAX_SEQ),
        "status": S("enum", True, choices=REQUEST_STATUSES[1:]),
    },
    "service.requests": {"conv": S("conv", True), "open": S("bool")},
    "service.close": {"conv": S("conv", True), "episode": S("int", False, 1, MAX_SEQ)},
    "service.rate": {
        "conv": S("conv", True),
        "episode": S("int", True, 1, MAX_SEQ),
        "stars": S("int", True, 1, 5),
        "comment": S("str", False, 0, 500),
    },
    "service.claim": {"conv": S("conv", True), "seq": S("int", True, 1, MAX_SEQ)},
    "service.to_human": {"conv": S("conv", True), "text": S("str", False, 0, 500)},
    "service.campaign": {
        "cid": S("str", True, 1, 64),
        "card": S("card", True),
        "tags": S("tags"),
        "stock": S("int", False, 1, 10_000_000),
        "points": S("int", False, 0, 100_000),
    },
    "campaign.claim": {"id": S("int", True, 1, MAX_SEQ)},
    "service.report": {
        "from": S("int", True, 0, MAX_SEQ),
        "to": S("int", True, 0, MAX_SEQ),
        "format": S("enum", choices=("json", "csv")),
        "by": S("enum", choices=("person", "group")),
    },
    # -- live Q&A sessions (docs/live-sessions.md)
    "live.create": {
        "cid": S("str", True, 1, 64),
        "title": S("str", True, 1, 120),
        "description": S("str", False, 0, 2000),
        "hosts": S("users", max=20),
        "moderators": S("users", max=50),
        "starts_ts": S("int", False, 0, MAX_SEQ),
        "approval": S("bool"),
        "anonymous": S("bool"),
        "slow_s": S("int", False, 0, 120),
        "ask_interval_s": S("int", False, 0, 3600),
        "rooms": S("rooms", max=MAX_ROOMS),
    },
    "live.update": {
        "session": S("conv", True),
        "title": S("str", False, 1, 120),
        "description": S("str", False, 0, 2000),
        "hosts": S("users", max=20),
        "moderators": S("users", max=50),
        "starts_ts": S("int", False, 0, MAX_SEQ),
        "approval": S("bool"),
        "anonymous": S("bool"),
        "slow_s": S("int", False, 0, 120),
        "ask_interval_s": S("int", False, 0, 3600),
    },
    "live.state": {"session": S("conv", True), "state": S("enum", True, choices=LIVE_STATES[1:])},
    "live.list": {"state": S("enum", choices=LIVE_STATES), "after": S("conv"), "limit": S("int", False, 1, 100)},
    "live.follow": {"session": S("conv", True), "on": S("bool")},
    "live.join": {"session": S("conv", True), "room": S("room")},
    "live.leave": {"session": S("conv", True)},
    "live.ask": {
        "session": S("conv", True),
        "cid": S("str", True, 1, 64),
        "text": S("str", True, 1, 2000),
        "anonymous": S("bool"),
        "room": S("room"),
    },
    "live.vote": {"session": S("conv", True), "id": S("int", True, 1, MAX_SEQ), "on": S("bool")},
    "live.moderate": {
        "session": S("conv", True),
        "id": S("int", True, 1, MAX_SEQ),
        "action": S("enum", True, choices=("approve", "reject", "hide", "unhide")),
    },
    "live.merge": {"session": S("conv", True), "id": S("int", True, 1, MAX_SEQ), "into": S("int", True, 1, MAX_SEQ)},
    "live.answer": {
        "session": S("conv", True),
        "id": S("int", True, 1, MAX_SEQ),
        "text": S("str", False, 1, 4000),
        "live": S("bool"),
    },
    "live.mark": {
        "session": S("conv", True),
        "id": S("int", True, 1, MAX_SEQ),
        "action": S("enum", True, choices=("dismiss", "reopen", "pin", "unpin")),
    },
    "live.queue": {
        "session": S("conv", True),
        "state": S("enum", choices=QUESTION_STATES),
        "after": S("int", False, 0, MAX_SEQ),
        "limit": S("int", False, 1, 200),
    },
    "live.chat": {
        "session": S("conv", True),
        "room": S("room"),
        "cid": S("str", True, 1, 64),
        "text": S("str", True, 1, 2000),
    },
    "live.mute": {"session": S("conv", True), "user": S("user", True), "seconds": S("int", True, 0, 30 * 86400)},
    "live.archive": {"session": S("conv", True)},
    "poll.create": {
        "conv": S("conv", True),
        "cid": S("str", True, 1, 64),
        "question": S("str", True, 1, 200),
        "options": S("options", True, 2, MAX_POLL_OPTIONS),
        "multi": S("bool"),
        "closes_ts": S("int", True, 0, MAX_SEQ),
        "weighted": S("bool"),
    },
    "poll.vote": {"poll": S("int", True, 1, MAX_SEQ), "options": S("choices", True, 1, MAX_POLL_OPTIONS)},
    "poll.close": {"poll": S("int", True, 1, MAX_SEQ)},
    "poll.get": {"poll": S("int", True, 1, MAX_SEQ)},
    "inbox": {
        "filter": S("enum", choices=INBOX_FILTERS),
        "after": S("str", False, 1, 200),
        "limit": S("int", False, 1, 100),
    },
}


class Scope(StrEnum):
    """Who may run an op. A caller holds one or more scopes: every authenticated
    identity holds ``user``; staff tokens add ``staff``, bot tokens ``bot``; a
    backend's admin token holds ``admin``. ``anyone`` is for ``auth`` only."""

    ANYONE = "anyone"
    USER = "user"
    STAFF = "staff"
    BOT = "bot"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Rule:
    """What the op table says of an op besides its arguments.

    ``retry``: safe to send again after the connection dropped before the reply
    (protocol/README.md §5, "Retrying after a dropped connection"): the op is a
    read, never moves state back, or is deduplicated on a client-chosen id.
    ``scope``: the scope a caller must hold (the server refuses others with
    ``forbidden``).
    ``backend``: also served on the admin API to a backend's admin token
    (ops of the ``admin`` scope always are); the op decides what a backend may
    do there, as it does for a member's role."""

    retry: bool
    scope: Scope = Scope.USER
    backend: bool = False


R = Rule  # short alias for the table
RETRY, ONCE = R(True), R(False)

# Keep in step with OPS (checked below) and with the README's retry list.
RULES: dict[str, Rule] = {
    "auth": R(False, Scope.ANYONE),
    "auth.refresh": RETRY,  # the same token again renews to the same expiry
    "ping": RETRY,
    "dm.open": RETRY,  # one canonical conversation per pair
    "block": RETRY,
    "unblock": RETRY,
    "circle.create": ONCE,  # a retry makes a second circle
    "circle.list": RETRY,
    "circle.join": ONCE,  # a retry answers conflict (already a member)
    "circle.leave": ONCE,  # a retry answers not_member
    "circle.role": ONCE,
    "circle.announce": ONCE,
    "circle.mute": ONCE,
    "members": RETRY,
    "send": RETRY,  # deduplicated on (from, cid)
    "recall": ONCE,  # a retry answers conflict (already recalled)
    "history": RETRY,
    "read": RETRY,  # the cursor never moves back
    "sync": RETRY,
    "convs": RETRY,
    "presence.sub": RETRY,
    "presence.unsub": RETRY,
    "presence.set": RETRY,
    "typing": RETRY,
    "points.balance": RETRY,
    "points.ledger": RETRY,
    "points.top": RETRY,
    "tip": RETRY,  # deduplicated on its tid
    "redpacket.send": RETRY,  # deduplicated on its rid
    "redpacket.claim": RETRY,  # one claim per user: a retry returns the same share
    "notify.get": RETRY,
    "notify.set": RETRY,  # sets absolute values
    "service.provision": R(True, Scope.ADMIN),  # idempotent on the owner: a retry reconciles to the same
    "service.members": R(True, Scope.ADMIN),  # adding a member twice or removing one gone changes nothing
    "service.handover": R(True, Scope.ADMIN),  # to the same Fellow again: nothing changes
    "service.post": R(True, Scope.ADMIN),  # deduplicated on (caller, cid), as send
    "admin.kick": R(True, Scope.ADMIN),  # closes what is open now; a retry closes what opened since
    "admin.revoke": R(True, Scope.ADMIN),  # the stored time only moves forward
    "service.request": RETRY,  # deduplicated on (group, rid)
    "service.status": R(True, backend=True),  # the same status again changes nothing
    "service.requests": R(True, backend=True),
    "service.close": R(True, backend=True),  # with its episode: a retry closes nothing newer
    "service.rate": RETRY,  # once per episode: the same rating again returns the stored one
    "service.campaign": R(True, Scope.ADMIN),  # deduplicated on (caller, cid): a retry returns its progress
    "campaign.claim": RETRY,  # once per owner: a retry returns the same claim (dup)
    "service.report": R(True, Scope.ADMIN),  # a read
    "inbox": R(True, Scope.STAFF),
    "service.claim": R(True, Scope.BOT),  # the same bot again: answered as before (dup)
    "service.to_human": R(True, Scope.BOT),  # handed over already: nothing changes
    "live.create": R(True, Scope.STAFF, backend=True),  # deduplicated on (caller, cid)
    "live.update": R(True, backend=True),  # sets absolute values
    "live.state": R(True, backend=True),  # the same state again changes nothing
    "live.list": RETRY,
    "live.follow": RETRY,
    "live.join": RETRY,  # a new snapshot
    "live.leave": RETRY,
    "live.ask": RETRY,  # deduplicated on (asker, cid)
    "live.vote": RETRY,  # sets the vote on or off
    "live.moderate": R(True, backend=True),  # the same action again changes nothing
    "live.merge": R(True, backend=True),  # merged already: the same answer
    "live.answer": R(True, backend=True),  # answered already: the stored answer
    "live.mark": R(True, backend=True),
    "live.queue": R(True, backend=True),
    "live.chat": RETRY,  # deduplicated on (sender, cid)
    "live.mute": R(True, backend=True),  # sets an absolute time
    "live.archive": R(True, backend=True),
    "poll.create": RETRY,  # deduplicated on (caller, cid)
    "poll.vote": RETRY,  # sets the voter's choice
    "poll.close": RETRY,
    "poll.get": R(True, backend=True),
}

assert RULES.keys() == OPS.keys(), "every op has a rule and every rule an op"

#: Ops the admin API serves (docs/admin-api.md).
ADMIN_API_OPS = frozenset(op for op, rule in RULES.items() if rule.scope is Scope.ADMIN or rule.backend)

#: Ops a client may send again after a dropped connection (from the table).
RETRY_SAFE = frozenset(op for op, rule in RULES.items() if rule.retry)


def check_args(op: str, d: Any) -> None:
    """Raise :class:`RequestError` unless ``d`` is valid for ``op``.

    Unknown keys are refused too: a typo must not pass silently.
    """
    schema = OPS.get(op)
    if schema is None:
        raise RequestError(Err.UNKNOWN_OP, f"unknown op {op[:64]!r}")
    if not isinstance(d, dict):
        raise RequestError(Err.BAD_REQUEST, "d must be a map")
    for name, value in d.items():
        spec = schema.get(name) if isinstance(name, str) else None
        if spec is None:
            raise RequestError(Err.BAD_REQUEST, f"unknown field {str(name)[:64]!r}")
        spec.check(name, value)
    for name, spec in schema.items():
        if spec.required and name not in d:
            raise RequestError(Err.BAD_REQUEST, f"{name} is required")
