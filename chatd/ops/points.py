"""Points: balance, ledger, leaderboard, tips and red packets."""

from __future__ import annotations

import functools
import random
from typing import Any

from chatd_protocol import Err, RequestError

from ..clock import Clock
from ..core.caller import Caller
from ..core.directory import Directory
from ..core.fanout import Fanout
from ..points.split import split_amounts
from ..store.base import Ledger
from .base import Args, Commit, Reply, member_state

_rng = random.SystemRandom()


class PointsOps:
    def __init__(
        self, commit: Commit, ledger: Ledger, fanout: Fanout, directory: Directory, clock: Clock, red_packet_ttl_s: int
    ) -> None:
        self.directory = directory
        self.commit = commit
        self.ledger = ledger
        self.fanout = fanout
        self.clock = clock
        self.red_packet_ttl_ms = red_packet_ttl_s * 1000

    async def balance(self, caller: Caller, d: Args) -> Reply:
        return dict(await self.ledger.balance(caller.user))

    async def entries(self, caller: Caller, d: Args) -> Reply:
        items, nxt = await self.ledger.recent(caller.user, d.get("before"), d.get("limit", 50))
        return {"entries": items, "next": nxt}

    async def top(self, caller: Caller, d: Args) -> Reply:
        return {"top": await self.ledger.leaderboard(d.get("limit", 20))}

    async def _push_balances(self, moves: dict[str, dict[str, Any]]) -> None:
        """A ``points`` push to each user whose balance moved (all their sockets, every node)."""
        for user, entry in moves.items():
            bal = await self.ledger.balance(user)
            self.fanout.user_push(user, "points", {"entries": [entry], "balance": bal})

    async def _into(self, caller: Caller, conv: str) -> None:
        """What sending into ``conv`` needs before the write: the refusals every
        conversation op gives a non-member (revealing nothing), then a block:
        points cross no block, as messages do not (the write checks membership
        and mutes again in its transaction)."""
        state, _ = await member_state(self.directory, caller, conv)
        if state.blocked:
            raise RequestError(Err.BLOCKED, "this conversation is blocked")

    async def tip(self, caller: Caller, d: Args) -> Reply:
        await self._into(caller, d["conv"])
        now = self.clock.wall_ms()
        user = caller.user
        out = await self.commit(self.ledger.tip(user, d["tid"], d["conv"], d["seq"], d["amount"], now))
        if not out["dup"]:
            key = f"tip:{user}:{d['tid']}"
            ref = f"{d['conv']}#{d['seq']}"

            def entry(suffix: str, amount: int) -> dict[str, Any]:
                return {"key": key + suffix, "currency": "points", "amount": amount, "rule": "tip", "ref": ref, "ts": now}

            await self._push_balances({user: entry(":out", -out["amount"]), out["to"]: entry(":in", out["amount"])})
        return dict(out)

    async def send_red_packet(self, caller: Caller, d: Args) -> Reply:
        await self._into(caller, d["conv"])
        now = self.clock.wall_ms()
        user = caller.user
        split = d.get("split", "random")
        amounts = functools.partial(split_amounts, d["total"], d["shares"], split, _rng)
        out, _event = await self.commit(
            self.ledger.send_red_packet(
                user, caller.author, d["rid"], d["conv"], d["total"], d["shares"], split, amounts, now,
                self.red_packet_ttl_ms,
            )
        )
        if not out["dup"]:
            entry = {
                "key": f"redpacket:{user}:{d['rid']}",
                "currency": "points",
                "amount": -d["total"],
                "rule": "redpacket.hold",
                "ref": out["id"],
                "ts": now,
            }
            await self._push_balances({user: entry})
        return dict(out)

    async def claim_red_packet(self, caller: Caller, d: Args) -> Reply:
        now = self.clock.wall_ms()
        user = caller.user
        out = await self.commit(self.ledger.claim_red_packet(user, d["id"], now))
        if not out["dup"]:
            entry = {
                "key": f"{d['id']}:claim:{user}",
                "currency": "points",
                "amount": out["amount"],
                "rule": "redpacket.claim",
                "ref": d["id"],
                "ts": now,
            }
            await self._push_balances({user: entry})
        return dict(out)
