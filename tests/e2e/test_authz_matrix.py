"""The authorization matrix: every op of the protocol's op table (``chatd_protocol.OPS``)
by every kind of caller (ROLES) on every kind of target (a circle, a DM, one that does
not exist, or none), with the answer protocol/README.md gives, in one table (TABLE),
against one real server and SQLite file. Every refusal is also checked to leak nothing:
the error reply holds the error and nothing else (no message text, no user or
conversation the request did not name), the refused op changed nothing a member can see
(history, members, balances, the caller's conversations and presence), no push from a
conversation reached a socket of a user who was never in it, and a third party's refusal
on a DM that exists is byte for byte the refusal on one that does not.

How a later issue extends it: a new op in OPS fails ``test_the_table_covers_the_op_table``
until it has rows here. Add one row per target it takes (``none``; for a ``conv``
argument ``circle``, ``dm``, ``absent-circle`` and ``absent-dm``; ``+variant`` for an
argument that changes who may, like ``certified``), one outcome per role in ROLES order,
taken from the spec (a caller lacking the op's scope in RULES gets ``forbidden``, which
the same test checks); say how to build its request in ``World.args``; and if a
successful call changes what later cells see, put it in FRESH (each of its cells then
gets a new circle). A new conversation kind adds its targets and its branch in
``World.conv_for``; a new role (a service agent, an admin API caller) adds a column to
ROLES and to every row, and its set-up in ``World.setup``. A cell where the server is
known to disagree with the spec stays as the spec says and is listed in KNOWN_DEFECTS,
which ``test_known_defects_still_show`` keeps honest: a fixed defect must leave the list.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
import pytest_asyncio
from chatd_protocol import CODECS, MSGPACK, OPS, RULES, ErrorReply, RequestError, Scope
from support import stop_app, token, url
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol
from wsclient import ENCODINGS, WsClient

from chatd.app import App
from chatd.auth import Identity
from chatd.config import DEV_SECRET, Config
from chatd.core.caller import Caller
from chatd.points import Award

# -- the table -------------------------------------------------------------------

OK = "ok"
NM = "not_member"
NF = "not_found"
FB = "forbidden"
MU = "muted"
BL = "blocked"
CF = "conflict"
AA = "already_authenticated"
CL = "close 4103"  # before auth, a request other than auth closes the socket
C1 = "close 4101"  # a token of a type that does not exist
NA = "-"  # the role does not exist for this target (no mutes, owners or admins in a DM)

ROLES: dict[str, str] = {
    "anon": "a socket that has not authenticated yet",
    "outsider": "a fan who is not a member",
    "member": "a fan member",
    "muted": "a member an admin muted (circles only)",
    "blocked": "a member the other member (the observer) blocked; in a circle blocks do not apply",
    "blocker": "a member who blocked the other member (the observer); likewise",
    "owner": "the circle's owner",
    "admin": "a circle admin",
    "deposit": "a member of user type deposit",
    "car_owner": "a member of user type owner",
    "staff_in": "a staff member whose token claims the staff role moderator",
    "bot_in": "a bot member",
    "staff": "staff, not a member (with the moderator role claim)",
    "bot": "a bot, not a member",
    "claims": "a fan, not a member, whose token claims roles admin, moderator and owner",
    "admin_scope": "a caller with the admin scope only (a backend's, as the HTTP admin API makes one: run in process)",
}

# Targets: "none" (no conversation), "circle" / "dm" (the role's own circle or DM; a
# non-member's: one it is not in), "absent-circle" / "absent-dm" (an id nothing has),
# and a "+variant" for an argument that changes who may.
# fmt: off
TABLE: dict[tuple[str, str], tuple[str, ...]] = {
    # (op, target)                      anon out mem mut blk bkr own adm dep car sti bti stf bot clm adm_scope
    ("auth", "none"):                   (OK, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA),
    ("auth", "none+typ_admin"):         (C1, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA, AA),
    ("auth.refresh", "none"):           (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("auth.refresh", "none+other"):     (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB),
    ("auth.refresh", "none+typ_admin"): (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB),
    ("ping", "none"):                   (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("dm.open", "dm"):                  (CL, OK, OK, NA, BL, BL, NA, NA, OK, OK, OK, OK, OK, OK, OK, FB),
    ("dm.open", "none+unknown"):        (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("block", "none"):                  (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("unblock", "none"):                (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("circle.create", "none"):          (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("circle.create", "none+certified"): (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK, FB, OK, FB, FB, FB),
    ("circle.list", "none"):            (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("circle.join", "circle"):          (CL, OK, CF, CF, CF, CF, CF, CF, CF, CF, CF, CF, OK, OK, OK, FB),
    ("circle.join", "dm"):              (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.join", "absent-circle"):   (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.join", "absent-dm"):       (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.leave", "circle"):         (CL, NM, OK, OK, OK, OK, CF, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("circle.leave", "dm"):             (CL, NM, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NM, NM, NM, FB),
    ("circle.leave", "absent-circle"):  (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.leave", "absent-dm"):      (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("circle.role", "circle"):          (CL, NM, FB, FB, FB, FB, OK, OK, FB, FB, FB, FB, NM, NM, NM, FB),
    ("circle.role", "dm"):              (CL, NM, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NM, NM, NM, FB),
    ("circle.role", "absent-circle"):   (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.role", "absent-dm"):       (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("circle.announce", "circle"):      (CL, NM, FB, FB, FB, FB, OK, OK, FB, FB, FB, FB, NM, NM, NM, FB),
    ("circle.announce", "dm"):          (CL, NM, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NM, NM, NM, FB),
    ("circle.announce", "absent-circle"): (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.announce", "absent-dm"):   (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("circle.mute", "circle"):          (CL, NM, FB, FB, FB, FB, OK, OK, FB, FB, FB, FB, NM, NM, NM, FB),
    ("circle.mute", "dm"):              (CL, NM, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NM, NM, NM, FB),
    ("circle.mute", "absent-circle"):   (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("circle.mute", "absent-dm"):       (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("members", "circle"):              (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("members", "dm"):                  (CL, NM, OK, NA, OK, OK, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("members", "absent-circle"):       (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("members", "absent-dm"):           (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("send", "circle"):                 (CL, NM, OK, MU, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("send", "circle+mention_all"):     (CL, NM, FB, MU, FB, FB, OK, OK, FB, FB, FB, FB, NM, NM, NM, FB),
    ("send", "dm"):                     (CL, NM, OK, NA, BL, BL, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("send", "dm+mention_all"):         (CL, NM, FB, NA, BL, BL, NA, NA, FB, FB, FB, FB, NM, NM, NM, FB),
    ("send", "absent-circle"):          (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("send", "absent-dm"):              (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    # recall: the message is the observer's (another member's), not the caller's own
    ("recall", "circle"):               (CL, NM, FB, FB, FB, FB, OK, OK, FB, FB, FB, FB, NM, NM, NM, FB),
    ("recall", "dm"):                   (CL, NM, FB, NA, FB, FB, NA, NA, FB, FB, FB, FB, NM, NM, NM, FB),
    ("recall", "absent-circle"):        (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("recall", "absent-dm"):            (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("history", "circle"):              (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("history", "dm"):                  (CL, NM, OK, NA, OK, OK, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("history", "absent-circle"):       (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("history", "absent-dm"):           (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("read", "circle"):                 (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("read", "dm"):                     (CL, NM, OK, NA, OK, OK, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("read", "absent-circle"):          (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("read", "absent-dm"):              (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("sync", "none"):                   (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("convs", "none"):                  (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("presence.sub", "none"):           (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("presence.unsub", "none"):         (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("presence.set", "none"):           (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("presence.set", "none+on_duty"):   (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK, FB, OK, FB, FB, FB),
    ("typing", "circle"):               (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("typing", "dm"):                   (CL, NM, OK, NA, BL, BL, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("typing", "absent-circle"):        (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("typing", "absent-dm"):            (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("points.balance", "none"):         (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("points.ledger", "none"):          (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("points.top", "none"):             (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    # tip: the observer's message
    ("tip", "circle"):                  (CL, NM, OK, MU, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("tip", "dm"):                      (CL, NM, OK, NA, BL, BL, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("tip", "absent-circle"):           (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("tip", "absent-dm"):               (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("redpacket.send", "circle"):       (CL, NM, OK, MU, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("redpacket.send", "dm"):           (CL, NM, OK, NA, BL, BL, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("redpacket.send", "absent-circle"): (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("redpacket.send", "absent-dm"):    (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    # claim: the observer's packet in the conversation (sent before any block)
    ("redpacket.claim", "circle"):      (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("redpacket.claim", "dm"):          (CL, NM, OK, NA, OK, OK, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("redpacket.claim", "none+unknown"): (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    # notify: the caller's own settings; with a conv, its mute there (members only)
    ("notify.get", "none"):             (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("notify.get", "circle"):           (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("notify.get", "dm"):               (CL, NM, OK, NA, OK, OK, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("notify.get", "absent-circle"):    (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("notify.get", "absent-dm"):        (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    ("notify.set", "none"):             (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("notify.set", "circle"):           (CL, NM, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, NM, NM, NM, FB),
    ("notify.set", "dm"):               (CL, NM, OK, NA, OK, OK, NA, NA, OK, OK, OK, OK, NM, NM, NM, FB),
    ("notify.set", "absent-circle"):    (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("notify.set", "absent-dm"):        (CL, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, NM, FB),
    # service groups, the backend's ops: on anything but a service group, not_found
    ("service.provision", "none"):      (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK),
    ("service.members", "circle"):      (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.members", "dm"):          (CL, FB, FB, NA, FB, FB, NA, NA, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.members", "absent-circle"):(CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.members", "absent-dm"):   (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.handover", "circle"):     (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.handover", "dm"):         (CL, FB, FB, NA, FB, FB, NA, NA, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.handover", "absent-circle"):(CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.handover", "absent-dm"):  (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.post", "circle"):         (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.post", "dm"):             (CL, FB, FB, NA, FB, FB, NA, NA, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.post", "absent-circle"):  (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    ("service.post", "absent-dm"):      (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF),
    # the service desk on what is no service group: not_found for everyone, the same
    # whether it exists or not; a backend runs status, requests and close (Rule.backend).
    # Who may in a service group: the service matrix in tests/e2e/test_service_desk.py
    ("service.request", "circle"):      (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.request", "dm"):          (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.request", "absent-circle"):(CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.request", "absent-dm"):   (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.status", "circle"):       (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.status", "dm"):           (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.status", "absent-circle"):(CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.status", "absent-dm"):    (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.requests", "circle"):     (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.requests", "dm"):         (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.requests", "absent-circle"):(CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.requests", "absent-dm"):  (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.close", "circle"):        (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.close", "dm"):            (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.close", "absent-circle"): (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.close", "absent-dm"):     (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("service.rate", "circle"):         (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.rate", "dm"):             (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.rate", "absent-circle"):  (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.rate", "absent-dm"):      (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("service.claim", "circle"):        (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.claim", "dm"):            (CL, FB, FB, NA, FB, FB, NA, NA, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.claim", "absent-circle"): (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.claim", "absent-dm"):     (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.to_human", "circle"):     (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.to_human", "dm"):         (CL, FB, FB, NA, FB, FB, NA, NA, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.to_human", "absent-circle"):(CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.to_human", "absent-dm"):  (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, NF, FB, NF, FB, FB),
    ("service.campaign", "none"):       (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK),
    ("service.report", "none"):         (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK),
    ("campaign.claim", "none"):         (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("inbox", "none"):                  (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK, FB, OK, FB, FB, FB),
    # live sessions (their roles have a matrix of their own: tests/e2e/test_live_authz.py); here, a
    # session that does not exist, and polls in circles
    ("live.create", "none"):            (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK),
    ("live.update", "none"):            (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.state", "none"):             (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.list", "none"):              (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("live.follow", "none"):            (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.join", "none"):              (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.join", "circle"):            (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.leave", "none"):             (CL, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, FB),
    ("live.ask", "none"):               (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.vote", "none"):              (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.moderate", "none"):          (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.merge", "none"):             (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.answer", "none"):            (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.mark", "none"):              (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.queue", "none"):             (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.chat", "none"):              (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.chat", "circle"):            (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("live.mute", "none"):              (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("live.archive", "none"):           (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    ("poll.create", "circle"):          (CL, NM, FB, FB, FB, FB, OK, OK, FB, FB, FB, FB, NM, NM, NM, FB),
    ("poll.create", "dm"):              (CL, NF, NF, NA, NF, NF, NA, NA, NF, NF, NF, NF, NF, NF, NF, FB),
    ("poll.create", "absent-circle"):   (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("poll.create", "absent-dm"):       (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("poll.vote", "none"):              (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("poll.close", "none"):             (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, FB),
    ("poll.get", "none"):               (CL, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF),
    # the admin API's ops: a backend's (the admin scope) and nobody else's
    ("admin.kick", "none"):             (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK),
    ("admin.revoke", "none"):           (CL, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, FB, OK),
}
# fmt: on

#: Every cell: (op, target, role) -> the outcome the spec gives.
MATRIX: dict[tuple[str, str, str], str] = {
    (op, target, role): outcome
    for (op, target), row in TABLE.items()
    for role, outcome in zip(ROLES, row, strict=True)
    if outcome != NA
}

# Ops whose success changes what later cells would see: each such cell on a circle gets
# a circle of its own (the owner, the observer and the caller in its role).
FRESH = frozenset({"circle.join", "circle.leave", "circle.role", "circle.mute", "circle.announce"})

# Cells whose success must show in World.fingerprint: that the check of their refusals
# can see what they would have done.
CHANGES = frozenset(
    {
        (op, target)
        for op, target in TABLE
        if op in {"send", "recall", "tip", "redpacket.send", "redpacket.claim", "circle.create"} or op in FRESH
    }
    | {("notify.set", "circle"), ("notify.set", "dm"), ("presence.set", "none+on_duty")}
)

MEMBER_ROLES = ("member", "muted", "blocked", "blocker", "owner", "admin", "deposit", "car_owner", "staff_in", "bot_in")
DM_ROLES = ("member", "blocked", "blocker", "deposit", "car_owner", "staff_in", "bot_in")
OUTSIDERS = ("outsider", "staff", "bot", "claims")
SOCKET_ROLES = tuple(r for r in ROLES if r not in ("anon", "admin_scope"))


def cells(op: str, target: str, roles: tuple[str, ...], what: str) -> dict[tuple[str, str, str], str]:
    return {(op, target, role): what for role in roles}


#: Cells where the server is known to disagree with the spec (the table says what the
#: spec requires), with what it does instead. Each is a defect in chatd/ to fix; a
#: fixed one must leave this list (``test_known_defects_still_show``).
KNOWN_DEFECTS: dict[tuple[str, str, str], str] = {}

OBSERVER = "u.t"  # a fan in every set-up conversation: authors the targets, is muted/promoted, watches
ABSENT_PEER = "u.z"  # a known user with no DM: dm:u.member:u.z does not exist (same length as the real one)
STRANGER = "u.stranger"  # whom block / unblock name
NOBODY = "u.nobody"  # never authenticated
ABSENT_CIRCLE = "c:999999"
ABSENT_PACKET = "rp:999999"
ABSENT_SESSION = "l:999999"
ABSENT_POLL = 999_999
FAR = 4_102_444_800_000  # ms: 2100-01-01

TOKEN_KW: dict[str, dict[str, Any]] = {
    "deposit": {"type": "deposit"},
    "car_owner": {"type": "owner"},
    "staff_in": {"type": "staff", "roles": ["moderator"]},
    "staff": {"type": "staff", "roles": ["moderator"]},
    "bot_in": {"type": "bot"},
    "bot": {"type": "bot"},
    "claims": {"roles": ["admin", "moderator", "owner"], "badges": ["admin"]},
}
JSON_ROLES = frozenset({"member", "deposit", "staff", "claims"})  # the others speak msgpack


def user_of(role: str) -> str:
    return "u.backend" if role == "admin_scope" else f"u.{role}"


def token_of(role: str) -> str:
    kw = dict(TOKEN_KW.get(role, {}))
    return token(user_of(role), kw.pop("type", "fan"), **kw)


def typ_admin_token(user: str) -> str:
    """Correctly signed, for a user type that does not exist."""
    return jwt.encode({"sub": user, "typ": "admin", "exp": int(time.time()) + 3600}, DEV_SECRET, algorithm="HS256")


# -- callers ---------------------------------------------------------------------


class Tap:
    """A client connection that keeps every reply as it came on the wire (by its id)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.codec = CODECS[str(ws.subprotocol)]
        self.replies: dict[Any, bytes | str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes | str]:
        async for data in self._ws:
            try:
                frame = self.codec.loads(data)
            except Exception:  # WsClient records it as a bad frame
                frame = None
            if isinstance(frame, dict) and "id" in frame and "push" not in frame:
                self.replies[frame["id"]] = data
            yield data


async def tapped(encoding: str, app: App) -> tuple[WsClient, Tap]:
    ws = await connect(
        url(app),
        subprotocols=[Subprotocol(ENCODINGS[encoding])],
        compression=None,
        open_timeout=5,
        close_timeout=2,
        ping_interval=None,
        max_size=None,
    )
    tap = Tap(ws)
    return WsClient(tap), tap  # type: ignore[arg-type]


@dataclass
class Outcome:
    code: str  # "ok", an error code, or "close NNNN"
    message: str = ""
    raw: bytes | str | None = None  # the error reply as it came on the wire (sockets only)
    d: dict[str, Any] = field(default_factory=dict)


@dataclass
class Actor:
    role: str
    user: str
    ws: WsClient | None = None
    tap: Tap | None = None

    async def do(self, app: App, op: str, d: dict[str, Any]) -> Outcome:
        if self.role == "anon":
            return await self._before_auth(app, op, d)
        if self.role == "admin_scope":
            ident = Identity(self.user, "backend", "bot", (), (), int(time.time()) + 3600)
            caller = Caller(ident.id, ident, frozenset({Scope.ADMIN}), ident.author(), CODECS[MSGPACK])
            try:
                return Outcome(OK, d=await app.ops.run(caller, op, dict(d)))
            except RequestError as exc:
                return Outcome(str(exc.code), exc.message)
        assert self.ws is not None and self.tap is not None
        frame = await self.ws.request(op, **d)
        if isinstance(frame, ErrorReply):
            return Outcome(frame.code, frame.message, self.tap.replies.pop(frame.id, None))
        self.tap.replies.pop(frame.id, None)
        return Outcome(OK, d=frame.d)

    async def _before_auth(self, app: App, op: str, d: dict[str, Any]) -> Outcome:
        c = await WsClient.connect(url(app))
        try:
            try:
                frame = await asyncio.wait_for(c.start(op, d), 5)
            except ConnectionError:
                return Outcome(f"close {await c.closed()}")
            if isinstance(frame, ErrorReply):
                return Outcome(frame.code, frame.message)
            return Outcome(OK, d=frame.d)
        finally:
            await c.close()


# -- the world the cells run in ----------------------------------------------------


@dataclass
class Problem:
    cell: tuple[str, str, str]
    what: str

    def __str__(self) -> str:
        op, target, role = self.cell
        return f"{op} / {target} / {role}: {self.what}"


@dataclass
class Results:
    answers: list[Problem] = field(default_factory=list)  # outcome other than the table's
    leaks: list[Problem] = field(default_factory=list)  # a refusal carrying more than the error
    effects: list[Problem] = field(default_factory=list)  # a refused op that changed something
    blind: list[Problem] = field(default_factory=list)  # an accepted op the effect check did not see
    pushes: list[str] = field(default_factory=list)  # pushes to sockets outside the conversation
    member_pushes: int = 0  # pushes of the shared circle and DM that members got (the check is not idle)
    existence: list[Problem] = field(default_factory=list)  # a DM's refusal differs from a missing one's
    cells: int = 0
    seconds: float = 0.0


NAME_CHARS = "A-Za-z0-9_.@:-"


def mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![{NAME_CHARS}]){re.escape(name)}(?![{NAME_CHARS}])", text) is not None


def names_in(d: dict[str, Any]) -> set[str]:
    """Every string the request carries, and the two users of a DM id it names."""
    out: set[str] = set()
    for v in d.values():
        for s in v if isinstance(v, list) else [v]:
            if isinstance(s, str):
                out.add(s)
                if s.startswith("dm:"):
                    out.update(s[3:].split(":"))
    return out


class World:
    def __init__(self, app: App) -> None:
        self.app = app
        self.actors: dict[str, Actor] = {}
        self.helpers: list[WsClient] = []
        self.n = itertools.count(1)
        self.circle = ""
        self.dms: dict[str, str] = {}  # role -> its DM with the observer
        self.shared_dm = ""  # the DM non-members are refused on
        self.absent_dm = ""
        self.target_seq: dict[str, int] = {}  # conv -> the observer's text message there
        self.packet: dict[str, str] = {}  # conv -> the observer's red packet there
        self.ever: dict[str, set[str]] = {}  # conv -> every user who was ever a member
        self.watched: set[str] = set()  # conversations the observer is in

    @property
    def t(self) -> WsClient:
        return self.helpers[0]

    def ws(self, role: str) -> WsClient:
        c = self.actors[role].ws
        assert c is not None
        return c

    async def setup(self) -> None:
        app = self.app
        for user in (OBSERVER, ABSENT_PEER, STRANGER):  # users the server has seen
            c = await WsClient.connect(url(app))
            await c.auth(token(user, "fan"))
            self.helpers.append(c)
        for role in ROLES:
            actor = self.actors[role] = Actor(role, user_of(role))
            if role not in ("anon", "admin_scope"):
                actor.ws, actor.tap = await tapped("json" if role in JSON_ROLES else "msgpack", app)
                await actor.ws.auth(token_of(role))
        awards = [Award(a.user, "points", 1000, "grant", f"grant:{a.user}") for a in self.actors.values()]
        awards.append(Award(OBSERVER, "points", 100_000, "grant", "grant:observer"))
        await app.pipeline.write(app.store.ledger.apply_awards(awards, ts=1))

        t = self.t
        self.circle = await self.new_circle("Shared circle", MEMBER_ROLES)
        convs = [self.circle]
        for role in DM_ROLES:  # before the blocks: the observer's message and packet in each
            conv = self.dms[role] = (await self.ws(role).call("dm.open", user=OBSERVER))["conv"]
            self.ever[conv] = {user_of(role), OBSERVER}
            self.watched.add(conv)
            convs.append(conv)
        for i, conv in enumerate(convs):
            self.target_seq[conv] = (await t.call("send", conv=conv, cid=f"s{i}", text=f"SECRET {i}"))["seq"]
            shares = len(ROLES) if conv == self.circle else 2
            packet = await t.call("redpacket.send", conv=conv, total=shares, shares=shares, rid=f"s{i}")
            self.packet[conv] = packet["id"]
        self.shared_dm = self.dms["member"]
        self.absent_dm = "dm:" + ":".join(sorted((user_of("member"), ABSENT_PEER)))
        assert len(self.absent_dm) == len(self.shared_dm)
        await t.call("block", user=user_of("blocked"))
        await self.ws("blocker").call("block", user=OBSERVER)
        await asyncio.sleep(0.05)
        for c in self.sockets():
            c.drain_pushes()

    def sockets(self) -> list[WsClient]:
        return self.helpers + [a.ws for a in self.actors.values() if a.ws is not None]

    async def new_circle(self, name: str, roles: tuple[str, ...]) -> str:
        """A circle of the owner's with the observer and ``roles`` in it as their role says."""
        owner = self.ws("owner")
        conv = (await owner.call("circle.create", name=name, category="city"))["conv"]
        await self.t.call("circle.join", conv=conv)
        for role in dict.fromkeys(roles):
            if role != "owner":
                await self.ws(role).call("circle.join", conv=conv)
        if "admin" in roles:
            await owner.call("circle.role", conv=conv, user=user_of("admin"), role="admin")
        if "muted" in roles:
            await owner.call("circle.mute", conv=conv, user=user_of("muted"), seconds=86400)
        self.ever[conv] = {OBSERVER, user_of("owner"), *(user_of(r) for r in roles)}
        self.watched.add(conv)
        return str(conv)

    async def conv_for(self, op: str, target: str, role: str) -> str:
        if target.startswith("circle"):
            if op in FRESH:
                return await self.new_circle(f"for {op} by {role}", (role,) if role in MEMBER_ROLES else ())
            return self.circle
        if target.startswith("dm"):
            return self.dms.get(role, self.shared_dm)
        return {"absent-circle": ABSENT_CIRCLE, "absent-dm": self.absent_dm}.get(target, "")

    async def args(self, op: str, target: str, role: str, conv: str) -> dict[str, Any]:
        """The request of a cell: what a caller in ``role`` would send to do ``op``."""
        n = next(self.n)
        user = user_of(role)
        variant = target.partition("+")[2]
        if op == "auth":
            return {"token": typ_admin_token(user) if variant == "typ_admin" else token_of(role)}
        if op == "auth.refresh":
            if variant == "other":
                return {"token": token(OBSERVER, "fan")}
            return {"token": typ_admin_token(user) if variant == "typ_admin" else token_of(role)}
        if op == "dm.open":
            return {"user": NOBODY if variant == "unknown" else OBSERVER}
        if op in ("block", "unblock"):
            return {"user": STRANGER}
        if op == "circle.create":
            return {"name": f"made by {role}", "category": "city", **({"certified": True} if variant else {})}
        if op == "presence.set":
            return {"on_duty": True} if variant else {"status": "online"}
        if op in ("presence.sub", "presence.unsub"):
            return {"users": [OBSERVER]}
        if op == "sync":
            return {"since": 0}
        if op == "redpacket.claim":
            return {"id": self.packet.get(conv, ABSENT_PACKET)}
        if op in ("circle.join", "circle.leave", "members", "history", "typing"):
            return {"conv": conv}
        if op in ("circle.role", "circle.mute"):
            return {"conv": conv, "user": OBSERVER, **({"role": "admin"} if op == "circle.role" else {"seconds": 3600})}
        if op == "circle.announce":
            return {"conv": conv, "text": f"SECRET announcement {n}"}
        if op == "send":
            d = {"conv": conv, "cid": f"cell{n}", "text": f"SECRET from {role} {n}"}
            return {**d, "mention_all": True} if variant else d
        if op == "recall":  # a fresh message of the observer's where a recall may succeed
            if conv == self.circle:
                seq = (await self.t.call("send", conv=conv, cid=f"r{n}", text=f"SECRET to recall {n}"))["seq"]
            else:
                seq = self.target_seq.get(conv, 1)
            return {"conv": conv, "seq": seq}
        if op == "read":
            return {"conv": conv, "seq": 1}
        if op == "tip":
            return {"conv": conv, "seq": self.target_seq.get(conv, 1), "amount": 1, "tid": f"tip{n}"}
        if op == "redpacket.send":
            return {"conv": conv, "total": 1, "shares": 1, "rid": f"rp{n}"}
        if op == "notify.get":
            return {"conv": conv} if conv else {}
        if op == "notify.set":  # a date far ahead: a write that should not have been shows
            return {"conv": conv, "muted_until": FAR} if conv else {"muted_until": 0}
        if op == "service.provision":  # a group of users no cell looks at
            return {"owner": f"u.svc{n}", "fellow": "u.svc.fellow"}
        if op == "service.members":
            return {"conv": conv, "remove": [NOBODY]}
        if op == "service.handover":
            return {"conv": conv, "fellow": NOBODY}
        if op == "service.post":
            return {"conv": conv, "cid": f"post{n}", "text": f"SECRET notice {n}"}
        if op == "service.request":
            return {"conv": conv, "type": "charging", "rid": f"rq{n}"}
        if op == "service.status":
            return {"conv": conv, "id": 1, "status": "accepted"}
        if op in ("service.requests", "service.close"):
            return {"conv": conv}
        if op == "service.rate":
            return {"conv": conv, "episode": 1, "stars": 5}
        if op == "service.claim":
            return {"conv": conv, "seq": 1}
        if op == "service.campaign":  # into groups no cell has
            return {"cid": f"camp{n}", "card": {"type": "gift", "title": "t"}, "tags": {"city": "nowhere"}}
        if op == "service.report":
            return {"from": 0, "to": 1}
        if op == "campaign.claim":  # nobody in the world owns a service group
            return {"id": 1}
        if op == "service.to_human":
            return {"conv": conv}
        if op == "live.create":
            return {"cid": f"live{n}", "title": f"made by {role}"}
        if op == "poll.create":
            return {"conv": conv, "cid": f"poll{n}", "question": "?", "options": ["a", "b"], "closes_ts": FAR}
        if op in ("poll.vote", "poll.close", "poll.get"):
            return {"poll": ABSENT_POLL, **({"options": [0]} if op == "poll.vote" else {})}
        if op.startswith("live.") and op != "live.list":
            session = conv or ABSENT_SESSION  # a circle's id names no session
            d = {"session": session}
            more: dict[str, dict[str, Any]] = {
                "live.update": {"title": "t"}, "live.state": {"state": "live"},
                "live.ask": {"cid": f"q{n}", "text": "SECRET question"}, "live.vote": {"id": 1},
                "live.moderate": {"id": 1, "action": "approve"}, "live.merge": {"id": 1, "into": 2},
                "live.answer": {"id": 1, "text": "SECRET answer"}, "live.mark": {"id": 1, "action": "pin"},
                "live.chat": {"cid": f"l{n}", "text": "SECRET line"}, "live.mute": {"user": OBSERVER, "seconds": 60},
            }
            return {**d, **more.get(op, {})}
        if op in ("admin.kick", "admin.revoke"):  # a user with no socket: a success closes none of the world's
            return {"user": NOBODY}
        if op in ("ping", "convs", "circle.list", "points.balance", "points.ledger", "points.top", "inbox", "live.list"):
            return {}  # no argument is needed, and none changes who may
        raise AssertionError(f"no request for {op}: say how to build one in World.args")

    async def fingerprint(self, actor: Actor, conv: str) -> dict[str, Any]:
        """What a refused op could have changed, as the observer and the caller see it
        (and the caller's notification mute there, as the store has it)."""
        t = self.t
        reads: dict[str, Awaitable[Any]] = {
            "observer's balance": t.call("points.balance"),
            "caller's notification mute": self.app.store.notify.conv_mute(actor.user, conv),
        }
        if conv in self.watched:
            reads["history"] = t.call("history", conv=conv, limit=5)
            reads["members"] = t.call("members", conv=conv, limit=200)
        if actor.ws is not None:
            reads["caller's balance"] = actor.ws.call("points.balance")
            reads["caller's convs"] = actor.ws.call("convs", limit=200)
            reads["caller's presence"] = t.call("presence.sub", users=[actor.user])
        return dict(zip(reads, await asyncio.gather(*reads.values()), strict=True))

    def succeeded(self, op: str, actor: Actor, conv: str, reply: dict[str, Any]) -> list[str]:
        """Track memberships an accepted op made; what an accepted read showed that the
        caller may not see."""
        if op == "circle.join":
            self.ever.setdefault(conv, set()).add(actor.user)
        elif op == "circle.create":
            self.ever[reply["conv"]] = {actor.user}
        elif op == "dm.open":
            self.ever.setdefault(reply["conv"], set()).update({actor.user, reply["peer"]})
        shown: list[str] = []
        if op == "sync":
            shown = [m["conv"] for m in reply["messages"]] + [c["conv"] for c in reply["convs"]]
        elif op == "convs":
            shown = [c["conv"] for c in reply["convs"]]
        return sorted({c for c in shown if actor.user not in self.ever.get(c, set())})

    def refusal_leaks(self, actor: Actor, d: dict[str, Any], out: Outcome) -> list[str]:
        found = []
        if out.raw is not None:
            assert actor.tap is not None
            wire = actor.tap.codec.loads(out.raw)
            if set(wire) != {"id", "error"}:
                found.append(f"reply keys {sorted(wire)}")
            err = wire.get("error", {})
            if set(err) != {"code", "message", "temporary"} or err.get("temporary") is not False:
                found.append(f"error {err}")
        if "SECRET" in out.message:
            found.append(f"message text in {out.message!r}")
        allowed = names_in(d) | {actor.user}
        for name in sorted(self.names()):
            if name not in allowed and not self.app.kinds.public(name) and mentions(out.message, name):
                found.append(f"{name} named in {out.message!r}")
        return found

    def names(self) -> set[str]:
        users = {a.user for a in self.actors.values()} | {OBSERVER, ABSENT_PEER, STRANGER, NOBODY}
        return users | set(self.ever) | set(self.packet.values())


# -- running it ------------------------------------------------------------------


async def run_cells(world: World) -> Results:
    res = Results()
    started = time.monotonic()
    for (op, target, role), expect in MATRIX.items():
        cell = (op, target, role)
        actor = world.actors[role]
        conv = await world.conv_for(op, target, role)
        d = await world.args(op, target, role, conv)
        watch = expect != OK or (op, target) in CHANGES
        before = await world.fingerprint(actor, conv) if watch else None
        got = await actor.do(world.app, op, d)
        res.cells += 1
        if got.code != expect:
            res.answers.append(Problem(cell, f"expected {expect}, got {got.code} {got.message!r}".rstrip()))
        if got.code == OK:
            shown = world.succeeded(op, actor, conv, got.d)
            if shown:
                res.leaks.append(Problem(cell, f"the reply shows conversations the caller is not in: {shown}"))
            if (op, target) in CHANGES and before is not None and await world.fingerprint(actor, conv) == before:
                res.blind.append(Problem(cell, "accepted, and the reads that check refusals saw no change"))
            continue
        for leak in world.refusal_leaks(actor, d, got):
            res.leaks.append(Problem(cell, leak))
        if before is not None:
            after = await world.fingerprint(actor, conv)
            for what in (k for k in before if before[k] != after[k]):
                res.effects.append(
                    Problem(
                        cell, f"refused ({got.code}) but {what} changed: {before[what]!r:.200} -> {after[what]!r:.200}"
                    )
                )
    await existence_probes(world, res)
    await asyncio.sleep(0.1)  # pushes in flight land
    for a in world.actors.values():
        if a.ws is None:
            continue
        for push in a.ws.drain_pushes():
            conv = push.d.get("conv")
            if conv is not None and a.user not in world.ever.get(conv, set()):
                res.pushes.append(f"{a.role} ({a.user}) got a {push.type} push of {conv}: {push.d}")
            res.member_pushes += conv in (world.circle, world.shared_dm)
        assert not a.ws.bad_frames, f"{a.role}: undecodable frames {a.ws.bad_frames}"
    res.seconds = time.monotonic() - started
    return res


async def existence_probes(world: World, res: Results) -> None:
    """A non-member's refusal on a DM that exists and on one that does not: the same
    bytes once the conversation id (of the same length) is swapped, for every op of
    the op table that takes a conversation."""
    real, absent = world.shared_dm, world.absent_dm
    for role in OUTSIDERS:
        actor = world.actors[role]
        assert actor.ws is not None and actor.tap is not None
        for op in (op for op in OPS if "conv" in OPS[op]):
            d = await world.args(op, "dm", role, real)
            replies = []
            for conv in (real, absent):
                fut = actor.ws.start(op, {**d, "conv": conv}, rid="probe")
                await fut
                raw = actor.tap.replies.pop("probe")
                replies.append(raw.encode() if isinstance(raw, str) else raw)
            seen, missing = replies
            if seen != missing.replace(absent.encode(), real.encode()) or b"error" not in seen:
                res.existence.append(Problem((op, "absent-dm", role), f"{seen!r} != {missing!r}"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def results(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Results]:
    db = tmp_path_factory.mktemp("authz") / "chatd.db"
    app = App(
        Config(
            host="127.0.0.1",
            port=0,
            db_path=str(db),
            sync="normal",
            ping_interval=None,
            points=False,  # no awards landing between a cell and its check
            circles_per_hour=0,  # quotas have their own tests; cells create many circles
            new_dms_per_hour=0,
            dm_unknown_users=False,  # the default: DMs only to users the server has seen
            send_rate=1e6,
            send_burst=10**6,
            request_rate=1e6,
            request_burst=10**6,
        )
    )
    await app.start()
    world = World(app)
    try:
        await world.setup()
        yield await run_cells(world)
    finally:
        for c in world.sockets():
            await c.close()
        await stop_app(app)


def report(problems: list[Problem], what: str) -> str:
    return f"{len(problems)} {what}:\n" + "\n".join(f"  {p}" for p in problems)


def unknown(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.cell not in KNOWN_DEFECTS]


# -- the tests -------------------------------------------------------------------


def test_the_table_covers_the_op_table() -> None:
    ops = {op for op, _ in TABLE}
    assert ops == set(OPS), (
        f"ops without rows in TABLE: {sorted(set(OPS) - ops)} (add them: see the module docstring); "
        f"rows for ops not in OPS: {sorted(ops - set(OPS))}"
    )
    targets = {"none", "circle", "dm", "absent-circle", "absent-dm"}
    for (op, target), row in TABLE.items():
        assert target.partition("+")[0] in targets, (op, target)
        assert len(row) == len(ROLES), (op, target, len(row))
        # an op on a conversation has a row for each kind and for an id nothing has
        if "conv" in OPS[op]:
            assert {t.partition("+")[0] for o, t in TABLE if o == op} >= targets - {"none"}, op
        # what the op table says: a caller without the op's scope is refused
        scope = RULES[op].scope
        by_role = dict(zip(ROLES, row, strict=True))
        if scope is not Scope.ANYONE:
            assert by_role["anon"] == CL, (op, target)
        if scope in (Scope.USER, Scope.STAFF) and not RULES[op].backend:
            assert by_role["admin_scope"] == FB, (op, target, "admin scope only, and the op needs", scope)
        if RULES[op].backend:  # a backend passes the scope check: the op decides
            assert by_role["admin_scope"] != FB, (op, target, "a backend op refused the admin scope")
        if scope is Scope.ADMIN:  # no user token holds it (tests/test_token_scopes.py gives one over a socket)
            assert {by_role[r] for r in SOCKET_ROLES} - {NA} == {FB}, (op, target, "only the admin scope may")
        if scope is Scope.STAFF:  # staff tokens only: the two staff columns
            assert {r for r in SOCKET_ROLES if by_role[r] not in (FB, NA)} <= {"staff_in", "staff"}, (op, target)
        if scope is Scope.BOT:  # bot tokens only: the two bot columns
            assert {r for r in SOCKET_ROLES if by_role[r] not in (FB, NA)} <= {"bot_in", "bot"}, (op, target)
        assert scope in (Scope.ANYONE, Scope.USER, Scope.STAFF, Scope.BOT, Scope.ADMIN), (
            f"{op} needs {scope}: give the roles that hold it a column")
    assert set(KNOWN_DEFECTS) <= set(MATRIX)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_cell_answers_as_the_table_says(results: Results) -> None:
    assert results.cells == len(MATRIX)
    bad = unknown(results.answers)
    assert not bad, report(bad, f"of {results.cells} cells ({results.seconds:.1f} s) answered otherwise than the table")


@pytest.mark.asyncio(loop_scope="module")
async def test_refusals_carry_nothing_but_the_error(results: Results) -> None:
    bad = unknown(results.leaks)
    assert not bad, report(bad, "replies carried more than they may")


@pytest.mark.asyncio(loop_scope="module")
async def test_refused_ops_change_nothing(results: Results) -> None:
    bad = unknown(results.effects)
    assert not bad, report(bad, "refused ops changed something")
    assert not results.blind, report(results.blind, "accepted ops the effect check is blind to")


@pytest.mark.asyncio(loop_scope="module")
async def test_no_push_reaches_a_socket_outside_the_conversation(results: Results) -> None:
    assert results.member_pushes > 100, "the members got no pushes: the check saw nothing"
    assert not results.pushes, f"{len(results.pushes)} pushes crossed:\n" + "\n".join(results.pushes)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_third_party_cannot_tell_whether_a_dm_exists(results: Results) -> None:
    bad = unknown(results.existence)
    assert not bad, report(bad, "refusals differ between a DM and no DM")


@pytest.mark.asyncio(loop_scope="module")
async def test_known_defects_still_show(results: Results) -> None:
    seen = {p.cell for p in results.answers + results.leaks + results.effects + results.existence}
    fixed = sorted(set(KNOWN_DEFECTS) - seen)
    assert not fixed, f"fixed: remove from KNOWN_DEFECTS {fixed}"
