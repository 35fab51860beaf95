"""Splitting a red packet into shares: pure, and drawn once per packet."""

from __future__ import annotations

import random

from chatd_protocol import Err, RequestError


def split_amounts(total: int, shares: int, split: str, rng: random.Random) -> list[int]:
    """``equal``: total // shares each, the remainder one point at a time to the
    first shares. ``random``: each share at least 1, drawn uniformly up to twice
    the average of what is left (the familiar "double average" method); the last
    share takes the rest. Always sums to ``total``."""
    if shares < 1 or total < shares:
        raise RequestError(Err.BAD_REQUEST, "need at least one point per share")
    if split == "equal":
        base, extra = divmod(total, shares)
        return [base + (1 if i < extra else 0) for i in range(shares)]
    out, left = [], total
    for remaining in range(shares, 1, -1):
        high = max(1, min(left - (remaining - 1), (2 * left) // remaining - 1))
        amount = rng.randint(1, high)
        out.append(amount)
        left -= amount
    out.append(left)
    return out
