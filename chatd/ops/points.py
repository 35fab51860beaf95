"""Points: balance, ledger, leaderboard, tips and red packets."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from ..points import ledger
from ..store.engine import write_op
from .base import commit

if TYPE_CHECKING:
    from ..conn import Conn

_rng = random.SystemRandom()


async def balance(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    return await ledger.balance(conn.svc.store, conn.user)


async def entries(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    items, nxt = await ledger.recent(conn.svc.store, conn.user, d.get("before"), d.get("limit", 50))
    return {"entries": items, "next": nxt}


async def top(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    return {"top": await ledger.leaderboard(conn.svc.store, d.get("limit", 20))}


async def _push_balances(conn: Conn, moves: dict[str, dict[str, Any]]) -> None:
    """A ``points`` push to each user whose balance moved (all their sockets, every node)."""
    for user, entry in moves.items():
        bal = await ledger.balance(conn.svc.store, user)
        conn.svc.fanout.user_push(user, "points", {"entries": [entry], "balance": bal})


async def tip(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc = conn.svc
    now = svc.now_ms()
    out = await commit(
        svc,
        write_op(ledger.tip, user=conn.user, tid=d["tid"], conv=d["conv"], seq=d["seq"], amount=d["amount"], ts=now),
    )
    if not out["dup"]:
        key = f"tip:{conn.user}:{d['tid']}"
        ref = f"{d['conv']}#{d['seq']}"
        await _push_balances(
            conn,
            {
                conn.user: {
                    "key": key + ":out",
                    "currency": "points",
                    "amount": -out["amount"],
                    "rule": "tip",
                    "ref": ref,
                    "ts": now,
                },
                out["to"]: {
                    "key": key + ":in",
                    "currency": "points",
                    "amount": out["amount"],
                    "rule": "tip",
                    "ref": ref,
                    "ts": now,
                },
            },
        )
    return dict(out)


async def send_red_packet(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc = conn.svc
    assert conn.identity is not None
    now = svc.now_ms()
    out, _event = await commit(
        svc,
        write_op(
            ledger.send_red_packet,
            user=conn.user,
            author=conn.identity.author(),
            rid=d["rid"],
            conv=d["conv"],
            total=d["total"],
            shares=d["shares"],
            split=d.get("split", "random"),
            ts=now,
            ttl_ms=svc.config.red_packet_ttl_s * 1000,
            rng=_rng,
        ),
    )
    if not out["dup"]:
        entry = {
            "key": f"redpacket:{conn.user}:{d['rid']}",
            "currency": "points",
            "amount": -d["total"],
            "rule": "redpacket.hold",
            "ref": out["id"],
            "ts": now,
        }
        await _push_balances(conn, {conn.user: entry})
    return dict(out)


async def claim_red_packet(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc = conn.svc
    now = svc.now_ms()
    out = await commit(svc, write_op(ledger.claim_red_packet, user=conn.user, pid=d["id"], ts=now))
    if not out["dup"]:
        entry = {
            "key": f"{d['id']}:claim:{conn.user}",
            "currency": "points",
            "amount": out["amount"],
            "rule": "redpacket.claim",
            "ref": d["id"],
            "ts": now,
        }
        await _push_balances(conn, {conn.user: entry})
    return dict(out)
