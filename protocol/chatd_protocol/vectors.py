"""Generate ``protocol/vectors/frames.json`` (run: ``python -m chatd_protocol.vectors``).

The valid cases' bytes are produced by the reference encoder; the invalid cases are
written by hand. Tests load the JSON file (not this module) so that a change to the
encoder that alters bytes on the wire shows up as a failing vector.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgpack
import orjson

_MSG = {
    "conv": "c:12",
    "seq": 7,
    "pos": 1043,
    "ts": 1763900000123,
    "from": "alice",
    "author": {"name": "Alice", "type": "owner", "badges": ["ES8 founder edition"], "roles": []},
    "kind": "text",
    "text": "hello @bob, 你好",
    "cid": "k2x9",
    "mentions": ["bob"],
}

VALID: list[tuple[str, dict[str, Any]]] = [
    ("auth request", {"id": 1, "op": "auth", "d": {"token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}}),
    ("string request id", {"id": "req-7", "op": "ping", "d": {}}),
    ("auth.refresh request", {"id": 11, "op": "auth.refresh", "d": {"token": "eyJhbGciOiJFZERTQSJ9.e30.sig"}}),
    (
        "send request",
        {"id": 2, "op": "send", "d": {"conv": "c:12", "cid": "k2x9", "text": "hello @bob, 你好", "mentions": ["bob"]}},
    ),
    ("sync request", {"id": 3, "op": "sync", "d": {"since": 1040, "limit": 500}}),
    ("send ack reply", {"id": 2, "d": {"conv": "c:12", "seq": 7, "pos": 1043, "ts": 1763900000123, "dup": False}}),
    (
        "auth reply",
        {
            "id": 1,
            "d": {
                "user": {"id": "alice", "name": "Alice", "type": "owner", "badges": ["EP Club"], "roles": []},
                "pos": 1040,
                "epoch": "9f2c41d07e3b5a68",
                "server_time": 1763900000000,
                "limits": {
                    "max_frame": 65536,
                    "max_text": 4000,
                    "send_rate": 10.0,
                    "send_burst": 30,
                    "recall_window_s": 120,
                },
            },
        },
    ),
    (
        "sync reply to a position of another store",
        {"id": 3, "d": {"messages": [], "pos": 17, "more": False, "epoch": "9f2c41d07e3b5a68", "convs": []}},
    ),
    ("error reply", {"id": 2, "error": {"code": "not_member", "message": "not a member of c:12", "temporary": False}}),
    (
        "rate limited reply",
        {
            "id": 9,
            "error": {
                "code": "rate_limited",
                "message": "send rate exceeded",
                "temporary": True,
                "retry_after_ms": 250,
            },
        },
    ),
    ("msg push", {"push": "msg", "d": _MSG}),
    (
        "system msg push",
        {
            "push": "msg",
            "d": {
                "conv": "c:12",
                "seq": 8,
                "pos": 1044,
                "ts": 1763900000200,
                "from": "alice",
                "author": _MSG["author"],
                "kind": "system",
                "event": {"type": "recall", "seq": 7},
            },
        },
    ),
    ("read push", {"push": "read", "d": {"conv": "dm:alice:bob", "user": "bob", "seq": 7}}),
    ("presence.sub request", {"id": 4, "op": "presence.sub", "d": {"users": ["fellow-li", "alice"]}}),
    (
        "presence.sub reply",
        {
            "id": 4,
            "d": {
                "presence": [
                    {"user": "fellow-li", "status": "online", "on_duty": True},
                    {"user": "alice", "status": "offline", "on_duty": False, "last_seen": 1763900000123},
                ]
            },
        },
    ),
    ("presence.set request", {"id": 5, "op": "presence.set", "d": {"status": "away", "on_duty": True}}),
    (
        "presence push",
        {"push": "presence", "d": {"user": "alice", "status": "away", "on_duty": False, "last_seen": 1763900000500}},
    ),
    ("typing request", {"id": 6, "op": "typing", "d": {"conv": "dm:alice:bob"}}),
    ("typing push", {"push": "typing", "d": {"conv": "dm:alice:bob", "user": "alice"}}),
    ("resync push", {"push": "resync", "d": {"reason": "bus"}}),
    ("tip request", {"id": 7, "op": "tip", "d": {"conv": "c:12", "seq": 7, "amount": 50, "tid": "t-1"}}),
    (
        "redpacket.send request",
        {
            "id": 8,
            "op": "redpacket.send",
            "d": {"conv": "c:12", "total": 1000, "shares": 10, "split": "random", "rid": "r-1"},
        },
    ),
    ("redpacket.claim reply", {"id": 9, "d": {"id": "rp:3", "amount": 87, "left": 9, "dup": False}}),
    (
        "points push",
        {
            "push": "points",
            "d": {
                "entries": [
                    {
                        "key": "checkin:alice:2026-11-24",
                        "currency": "points",
                        "amount": 5,
                        "rule": "checkin",
                        "ts": 1763900000123,
                        "ref": "message.sent:c:12:7",
                    },
                    {
                        "key": "post:message.sent:c:12:7",
                        "currency": "cv",
                        "amount": 1,
                        "rule": "post",
                        "ts": 1763900000123,
                        "ref": "message.sent:c:12:7",
                    },
                ],
                "balance": {"points": 105, "cv": 20},
            },
        },
    ),
    (
        "points.ledger reply with a capped entry",
        {
            "id": 10,
            "d": {
                "entries": [
                    {
                        "key": "post:message.sent:c:12:30",
                        "currency": "cv",
                        "amount": 0,
                        "rule": "post",
                        "ts": 1763900000999,
                        "ref": "message.sent:c:12:30",
                        "note": "daily cap 20 reached",
                    }
                ],
                "next": 1041,
            },
        },
    ),
    (
        "insufficient points reply",
        {"id": 7, "error": {"code": "insufficient_points", "message": "not enough points (need 50)", "temporary": False}},
    ),
    (
        "notify.set request: quiet hours 22:00-07:00 at UTC+8",
        {"id": 21, "op": "notify.set", "d": {"quiet_from": 1320, "quiet_to": 420, "utc_offset": 480}},
    ),
    ("notify.set reply", {"id": 21, "d": {"muted_until": 0, "quiet": {"from": 1320, "to": 420, "utc_offset": 480}}}),
    (
        "notify.set request: mute one conversation",
        {"id": 22, "op": "notify.set", "d": {"conv": "c:12", "muted_until": 1763986400000}},
    ),
    (
        "notify.get reply with conv",
        {"id": 23, "d": {"muted_until": 0, "conv": "c:12", "conv_muted_until": 1763986400000}},
    ),
    (
        "service.provision request",
        {"id": 14, "op": "service.provision", "d": {
            "owner": "olivia", "fellow": "fiona", "staff": [{"user": "eng1", "badges": ["Engineer"]}],
            "bots": ["bot.charging"], "tags": {"city": "Shanghai", "model": "ES8"}}},
    ),
    (
        "service.post card request",
        {"id": 15, "op": "service.post", "d": {"conv": "s:olivia", "cid": "so-1201", "card": {
            "type": "service_order", "title": "保养完成", "fields": [{"label": "Order", "value": "SO-1201"}],
            "actions": [{"id": "rate", "label": "Rate"}]}}},
    ),
    (
        "card message push",
        {"push": "msg", "d": {"conv": "s:olivia", "seq": 9, "pos": 2048, "ts": 1763900000123, "from": "crm",
                              "author": {"name": "CRM", "type": "bot", "badges": [], "roles": []}, "kind": "system",
                              "event": {"type": "card", "card": {"type": "delivery", "title": "交付完成"}}}},
    ),
    (
        "service.request request: the owner asks for road service",
        {"id": 30, "op": "service.request", "d": {"conv": "s:olivia", "type": "rescue", "note": "G15 高速抛锚",
                                                   "rid": "rq-1"}},
    ),
    (
        "service.request reply",
        {"id": 30, "d": {"conv": "s:olivia", "id": 1, "type": "rescue", "status": "open", "urgent": True,
                         "note": "G15 高速抛锚", "episode": 3, "created_ts": 1763900000123,
                         "updated_ts": 1763900000123, "updated_by": "olivia", "dup": False, "seq": 40}},
    ),
    ("service.status request", {"id": 31, "op": "service.status", "d": {"conv": "s:olivia", "id": 1,
                                                                       "status": "accepted"}}),
    (
        "request status message push",
        {"push": "msg", "d": {"conv": "s:olivia", "seq": 41, "pos": 2050, "ts": 1763900030000, "from": "eng1",
                              "author": {"name": "Engineer Li", "type": "staff", "badges": ["Engineer"], "roles": []},
                              "kind": "system", "event": {"type": "request", "id": 1, "request": "rescue",
                                                          "status": "accepted", "previous": "open"}}},
    ),
    ("service.close request", {"id": 32, "op": "service.close", "d": {"conv": "s:olivia", "episode": 3}}),
    ("service.claim request", {"id": 35, "op": "service.claim", "d": {"conv": "s:olivia", "seq": 42}}),
    ("service.claim reply", {"id": 35, "d": {"conv": "s:olivia", "seq": 42, "dup": False}}),
    ("service.to_human request", {"id": 36, "op": "service.to_human",
                                  "d": {"conv": "s:olivia", "text": "warranty question"}}),
    ("service.close reply", {"id": 32, "d": {"conv": "s:olivia", "episode": 3, "seq": 45,
                                              "rate_until": 1764504800123}}),
    ("service.rate request", {"id": 33, "op": "service.rate", "d": {"conv": "s:olivia", "episode": 3, "stars": 5,
                                                                   "comment": "很及时"}}),
    ("service.rate reply", {"id": 33, "d": {"conv": "s:olivia", "episode": 3, "stars": 5,
                                             "credit": {"fiona": 550000, "eng1": 450000}, "seq": 46, "dup": False}}),
    ("inbox request", {"id": 34, "op": "inbox", "d": {"filter": "waiting", "limit": 20}}),
    (
        "inbox reply",
        {"id": 34, "d": {"rows": [{
            "conv": "s:olivia", "rev": 6, "last_seq": 40, "episode": 3, "state": "bot", "waiting_since": 1763900000123,
            "due": 1763900120123, "overdue": 0, "requests": 1, "urgent": True, "last_activity": 1763900000123,
            "owner": {"id": "olivia", "name": "Olivia"}, "unread": 2, "role": "fellow",
            "last": {"seq": 40, "ts": 1763900000123, "sender": "olivia", "name": "Olivia", "event": "request"},
            "open_requests": [{"conv": "s:olivia", "id": 1, "type": "rescue", "status": "open", "urgent": True,
                               "note": "G15 高速抛锚", "episode": 3, "created_ts": 1763900000123,
                               "updated_ts": 1763900000123, "updated_by": "olivia"}]}],
            "after": None, "now": 1763900001000}},
    ),
    (
        "inbox push",
        {"push": "inbox", "d": {"conv": "s:olivia", "rev": 7, "last_seq": 41, "episode": 3, "state": "human",
                                "waiting_since": None, "due": None, "overdue": 0, "requests": 1, "urgent": True,
                                "last_activity": 1763900030000}},
    ),
    (
        "service.alert push",
        {"push": "service.alert", "d": {"conv": "s:olivia", "level": 1, "reason": "overdue",
                                        "waiting_since": 1763900000123,
                                        "due": 1763900120123}},
    ),
    (
        "service.campaign request",
        {"id": 37, "op": "service.campaign", "d": {
            "cid": "cny-2027", "card": {"type": "gift", "title": "新年礼包", "actions": [{"id": "claim", "label": "领取"}]},
            "tags": {"city": "Shanghai"}, "stock": 5000, "points": 200}},
    ),
    (
        "campaign card push",
        {"push": "msg", "d": {"conv": "s:olivia", "seq": 50, "pos": 3001, "ts": 1763900000123, "from": "crm",
                              "author": {"name": "CRM", "type": "bot", "badges": [], "roles": []}, "kind": "system",
                              "event": {"type": "card", "card": {"type": "gift", "title": "新年礼包"}, "campaign": 7}}},
    ),
    ("service.report request", {"id": 39, "op": "service.report",
                                "d": {"from": 1764518400000, "to": 1767196800000, "format": "csv"}}),
    ("campaign.claim request", {"id": 38, "op": "campaign.claim", "d": {"id": 7}}),
    ("campaign.claim reply", {"id": 38, "d": {"id": 7, "points": 200, "left": 4999, "dup": False}}),
    # -- live Q&A sessions and polls
    ("live.create request", {"id": 60, "op": "live.create", "d": {
        "cid": "nioday-2026", "title": "用户面对面", "hosts": ["ceo"], "moderators": ["mod1"],
        "starts_ts": 1763900000000, "approval": True, "anonymous": True, "slow_s": 10, "rooms": ["hefei", "chengdu"]}}),
    ("live.update request", {"id": 61, "op": "live.update", "d": {"session": "l:7", "slow_s": 0}}),
    ("live.state request", {"id": 62, "op": "live.state", "d": {"session": "l:7", "state": "live"}}),
    ("live.list request", {"id": 63, "op": "live.list", "d": {"state": "live", "limit": 20}}),
    ("live.follow request", {"id": 64, "op": "live.follow", "d": {"session": "l:7", "on": True}}),
    ("live.join request", {"id": 65, "op": "live.join", "d": {"session": "l:7", "room": "hefei"}}),
    ("live.join reply: the snapshot", {"id": 65, "d": {
        "session": {"session": "l:7", "creator": "ceo", "title": "用户面对面", "description": "", "state": "live",
                    "starts_ts": 1763900000000, "approval": True, "anonymous": True, "slow_s": 10,
                    "ask_interval_s": 60, "rooms": ["main", "hefei", "chengdu"], "pinned": 12, "version": 310,
                    "peak": 1520, "created_ts": 1763800000000, "started_ts": 1763900000000, "ended_ts": None},
        "role": None, "hosts": ["ceo"], "moderators": ["mod1"], "room": "hefei", "version": 310,
        "questions": [{"id": 12, "session": "l:7", "room": "main", "asker": None, "author": None, "anonymous": True,
                       "text": "换电站什么时候到县城?", "state": "open", "votes": 88, "ts": 1763900100000}],
        "open_questions": 1, "answered": [], "pinned": {"id": 12, "session": "l:7", "room": "main", "asker": None,
                                                       "author": None, "anonymous": True,
                                                       "text": "换电站什么时候到县城?", "state": "open", "votes": 88,
                                                       "ts": 1763900100000},
        "lines": [], "viewers": 1520, "my_votes": [12], "polls": [], "my_polls": {}, "following": True}}),
    ("live.leave request", {"id": 66, "op": "live.leave", "d": {"session": "l:7"}}),
    ("live.ask request", {"id": 67, "op": "live.ask", "d": {"session": "l:7", "cid": "q-1", "text": "电池租用会降价吗?",
                                                          "anonymous": False}}),
    ("live.vote request", {"id": 68, "op": "live.vote", "d": {"session": "l:7", "id": 12}}),
    ("live.vote reply", {"id": 68, "d": {"id": 12, "votes": 89, "on": True, "changed": True}}),
    ("live.moderate request", {"id": 69, "op": "live.moderate", "d": {"session": "l:7", "id": 13, "action": "approve"}}),
    ("live.merge request", {"id": 70, "op": "live.merge", "d": {"session": "l:7", "id": 14, "into": 12}}),
    ("live.answer request", {"id": 71, "op": "live.answer", "d": {"session": "l:7", "id": 12, "text": "明年覆盖所有县城"}}),
    ("live.mark request", {"id": 72, "op": "live.mark", "d": {"session": "l:7", "id": 12, "action": "pin"}}),
    ("live.queue request", {"id": 73, "op": "live.queue", "d": {"session": "l:7", "state": "pending"}}),
    ("live.chat request", {"id": 74, "op": "live.chat", "d": {"session": "l:7", "cid": "c-9", "text": "合肥的朋友们好"}}),
    ("live.mute request", {"id": 75, "op": "live.mute", "d": {"session": "l:7", "user": "troll", "seconds": 300}}),
    ("live.archive request", {"id": 76, "op": "live.archive", "d": {"session": "l:7"}}),
    ("poll.create request", {"id": 77, "op": "poll.create", "d": {
        "conv": "l:7", "cid": "p-1", "question": "NIO Day 在哪个城市?", "options": ["合肥", "成都", "上海"],
        "closes_ts": 1763900600000, "weighted": True}}),
    ("poll.vote request", {"id": 78, "op": "poll.vote", "d": {"poll": 3, "options": [1]}}),
    ("poll.vote reply", {"id": 78, "d": {"poll": 3, "options": [1], "weight": 10}}),
    ("poll.close request", {"id": 79, "op": "poll.close", "d": {"poll": 3}}),
    ("poll.get request", {"id": 80, "op": "poll.get", "d": {"poll": 3}}),
    ("live.question push: an anonymous question as the audience sees it", {"push": "live.question", "d": {
        "id": 13, "session": "l:7", "room": "hefei", "asker": None, "author": None, "anonymous": True,
        "text": "能不能出个小号的 ES6?", "state": "open", "votes": 0, "ts": 1763900200000}}),
    ("live.question push: a hidden question", {"push": "live.question", "d": {"id": 14, "session": "l:7",
                                                                             "state": "hidden"}}),
    ("live.mod push", {"push": "live.mod", "d": {
        "id": 13, "session": "l:7", "room": "hefei", "asker": "olivia",
        "author": {"name": "Olivia", "type": "owner", "badges": ["ES8"]}, "anonymous": True,
        "text": "能不能出个小号的 ES6?", "state": "pending", "votes": 0, "ts": 1763900200000}}),
    ("live.rank push", {"push": "live.rank", "d": {"session": "l:7", "version": 311, "votes": [[12, 89], [13, 4]],
                                                   "removed": [14]}}),
    ("live.pin push", {"push": "live.pin", "d": {"session": "l:7", "pinned": 12}}),
    ("live.viewers push", {"push": "live.viewers", "d": {"session": "l:7", "viewers": 15230}}),
    ("live.started push", {"push": "live.started", "d": {"session": "l:7", "title": "用户面对面", "state": "live"}}),
    ("poll.results push", {"push": "poll.results", "d": {
        "poll": 3, "conv": "l:7", "creator": "mod1", "question": "NIO Day 在哪个城市?", "options": ["合肥", "成都"],
        "multi": False, "weighted": True, "closes_ts": 1763900600000, "closed": False, "closed_ts": None,
        "version": 2, "created_ts": 1763900000000,
        "results": [{"option": 0, "votes": 1, "weight": 10, "by_type": {"owner": {"votes": 1, "weight": 10}}},
                    {"option": 1, "votes": 1, "weight": 1, "by_type": {"fan": {"votes": 1, "weight": 1}}}]}}),
    ("admin.kick request", {"id": 12, "op": "admin.kick", "d": {"user": "alice"}}),
    ("admin.revoke request", {"id": 13, "op": "admin.revoke", "d": {"user": "alice", "before": 1763900000}}),
    ("admin.revoke reply", {"id": 13, "d": {"user": "alice", "before": 1763900000}}),
]

# Client frames the server refuses by closing the socket.
CLOSES: list[dict[str, Any]] = [
    {"name": "not json", "json": "hello", "close": 4200},
    {"name": "json array", "json": "[1,2]", "close": 4200},
    {"name": "missing id", "json": '{"op":"ping","d":{}}', "close": 4200},
    {"name": "negative id", "json": '{"id":-1,"op":"ping"}', "close": 4200},
    {"name": "boolean id", "json": '{"id":true,"op":"ping"}', "close": 4200},
    {"name": "id string too long", "json": '{"id":"' + "x" * 65 + '","op":"ping"}', "close": 4200},
    {"name": "msgpack garbage", "msgpack_hex": "c1ffff", "close": 4200},
    {"name": "msgpack int", "msgpack_hex": "2a", "close": 4200},
    {"name": "truncated msgpack map", "msgpack_hex": "83a2696401", "close": 4200},
]

# Well-formed requests the server refuses with an error reply (after auth).
ERRORS: list[dict[str, Any]] = [
    {"name": "unknown op", "frame": {"id": 1, "op": "fly", "d": {}}, "error": "unknown_op"},
    {"name": "op not a string", "frame": {"id": 1, "op": 5, "d": {}}, "error": "bad_request"},
    {"name": "d not a map", "frame": {"id": 1, "op": "ping", "d": [1]}, "error": "bad_request"},
    {"name": "extra envelope key", "frame": {"id": 1, "op": "ping", "d": {}, "x": 1}, "error": "bad_request"},
    {
        "name": "missing required field",
        "frame": {"id": 1, "op": "send", "d": {"conv": "c:1", "cid": "a"}},
        "error": "bad_request",
    },
    {
        "name": "wrong type",
        "frame": {"id": 1, "op": "send", "d": {"conv": "c:1", "cid": "a", "text": 5}},
        "error": "bad_request",
    },
    {"name": "unknown field", "frame": {"id": 1, "op": "ping", "d": {"zzz": 1}}, "error": "bad_request"},
    {"name": "bad conv id", "frame": {"id": 1, "op": "history", "d": {"conv": "c 1"}}, "error": "bad_request"},
    {
        "name": "bool as int",
        "frame": {"id": 1, "op": "read", "d": {"conv": "c:1", "seq": True}},
        "error": "bad_request",
    },
    {
        "name": "limit out of range",
        "frame": {"id": 1, "op": "history", "d": {"conv": "c:1", "limit": 1000}},
        "error": "bad_request",
    },
    {
        "name": "bad category",
        "frame": {"id": 1, "op": "circle.create", "d": {"name": "x", "category": "cars"}},
        "error": "bad_request",
    },
    {
        "name": "mentions not user ids",
        "frame": {"id": 1, "op": "send", "d": {"conv": "c:1", "cid": "a", "text": "x", "mentions": [1]}},
        "error": "bad_request",
    },
    {"name": "not a member", "frame": {"id": 1, "op": "history", "d": {"conv": "c:999999"}}, "error": "not_found"},
    {
        "name": "a DM that does not exist",
        "frame": {"id": 1, "op": "history", "d": {"conv": "dm:nobody:somebody"}},
        "error": "not_member",
    },
    {"name": "auth.refresh with a forged token", "frame": {"id": 1, "op": "auth.refresh", "d": {"token": "x.y.z"}},
     "error": "forbidden"},
    {"name": "notify.set with quiet hours incomplete",
     "frame": {"id": 1, "op": "notify.set", "d": {"quiet_from": 1320, "quiet_to": 420}}, "error": "bad_request"},
    {"name": "notify.set with nothing to set", "frame": {"id": 1, "op": "notify.set", "d": {}}, "error": "bad_request"},
    {"name": "notify.set quiet_from equal to quiet_to",
     "frame": {"id": 1, "op": "notify.set", "d": {"quiet_from": 60, "quiet_to": 60, "utc_offset": 0}},
     "error": "bad_request"},
    {"name": "notify.get of a DM of others", "frame": {"id": 1, "op": "notify.get", "d": {"conv": "dm:x:y"}},
     "error": "not_member"},
    {"name": "service.post by a user, with a bad card: the scope is checked first",
     "frame": {"id": 1, "op": "service.post", "d": {"conv": "s:o", "cid": "c", "card": {"type": "Bad!", "title": "t"}}},
     "error": "forbidden"},
    {"name": "inbox by a user who is not staff, with a bad filter: the scope is checked first",
     "frame": {"id": 1, "op": "inbox", "d": {"filter": "everything"}}, "error": "forbidden"},
    {"name": "service.rate with six stars", "frame": {"id": 1, "op": "service.rate",
                                                      "d": {"conv": "s:o", "episode": 1, "stars": 6}},
     "error": "bad_request"},
    {"name": "service.request of an unknown type", "frame": {"id": 1, "op": "service.request",
                                                             "d": {"conv": "s:o", "type": "flight", "rid": "r"}},
     "error": "bad_request"},
    {"name": "admin op without the admin scope", "frame": {"id": 1, "op": "admin.kick", "d": {"user": "bob"}},
     "error": "forbidden"},
    {"name": "admin.revoke by a user, before as a string: the scope is checked first",
     "frame": {"id": 1, "op": "admin.revoke", "d": {"user": "bob", "before": "now"}}, "error": "forbidden"},
    {"name": "integer as 1.0", "frame": {"id": 1, "op": "read", "d": {"conv": "c:1", "seq": 1.0}}, "error": "bad_request"},
    {
        "name": "integer as a whole float",
        "frame": {"id": 1, "op": "history", "d": {"conv": "c:1", "limit": 20.0}},
        "error": "bad_request",
    },
    {"name": "empty presence list", "frame": {"id": 1, "op": "presence.sub", "d": {"users": []}}, "error": "bad_request"},
    {
        "name": "unknown presence status",
        "frame": {"id": 1, "op": "presence.set", "d": {"status": "invisible"}},
        "error": "bad_request",
    },
    {"name": "tip of zero", "frame": {"id": 1, "op": "tip", "d": {"conv": "c:1", "seq": 1, "amount": 0, "tid": "t"}},
     "error": "bad_request"},
    {
        "name": "red packet with an unknown split",
        "frame": {"id": 1, "op": "redpacket.send", "d": {"conv": "c:1", "total": 9, "shares": 3, "split": "x", "rid": "r"}},
        "error": "bad_request",
    },
    {"name": "claim of no packet", "frame": {"id": 1, "op": "redpacket.claim", "d": {"id": "rp:999"}}, "error": "not_found"},
    {"name": "typing where not a member", "frame": {"id": 1, "op": "typing", "d": {"conv": "c:999999"}}, "error": "not_found"},
    {"name": "live.join of a circle's id", "frame": {"id": 1, "op": "live.join", "d": {"session": "c:1"}},
     "error": "not_found"},
    {"name": "live.create by a user, slow mode 1 s: the scope is checked first", "frame": {"id": 1, "op": "live.create",
                                                       "d": {"cid": "x", "title": "t", "slow_s": 1}},
     "error": "forbidden"},
    {"name": "live.vote of no question", "frame": {"id": 1, "op": "live.vote", "d": {"session": "l:999999", "id": 1}},
     "error": "not_found"},
    {"name": "live.chat in an unknown room name", "frame": {"id": 1, "op": "live.chat",
                                                            "d": {"session": "l:1", "cid": "c", "text": "t",
                                                                  "room": "Main Hall"}},
     "error": "bad_request"},
    {"name": "poll.create with one option", "frame": {"id": 1, "op": "poll.create",
                                                      "d": {"conv": "c:1", "cid": "p", "question": "?",
                                                            "options": ["yes"], "closes_ts": 1}},
     "error": "bad_request"},
    {"name": "poll.vote naming an option twice", "frame": {"id": 1, "op": "poll.vote",
                                                           "d": {"poll": 1, "options": [0, 0]}},
     "error": "bad_request"},
]


def build() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for name, frame in VALID:
        cases.append(
            {
                "name": name,
                "frame": frame,
                "json": orjson.dumps(frame).decode(),
                "msgpack": msgpack.packb(frame, use_bin_type=True).hex(),
            }
        )
    for case in CLOSES:
        cases.append({**case, "side": "server"})
    cases.extend(ERRORS)
    return cases


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("vectors/frames.json")
    out.write_bytes(orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
