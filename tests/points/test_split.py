"""Splitting a red packet into shares (chatd/points/split.py)."""

from __future__ import annotations

import random

import pytest
from chatd_protocol import Err, RequestError

from chatd.points.split import split_amounts


@pytest.mark.parametrize(
    ("total", "shares", "expected"),
    [
        (10, 3, [4, 3, 3]),
        (11, 3, [4, 4, 3]),
        (9, 3, [3, 3, 3]),
        (5, 5, [1, 1, 1, 1, 1]),
        (7, 1, [7]),
        (1_000_000, 200, [5000] * 200),
        (1_000_001, 200, [5001] + [5000] * 199),
    ],
)
def test_equal_split_gives_the_remainder_to_the_first_shares(total: int, shares: int, expected: list[int]) -> None:
    assert split_amounts(total, shares, "equal", random.Random(0)) == expected


def test_equal_split_does_not_use_the_random_source() -> None:
    class NoRandom(random.Random):
        def randint(self, a: int, b: int) -> int:
            raise AssertionError("equal split drew a random number")

    assert split_amounts(100, 7, "equal", NoRandom()) == [15, 15] + [14] * 5


CASES = [(2, 2), (3, 2), (10, 3), (100, 10), (1000, 7), (200, 200), (201, 200), (1_000_000, 200), (50, 1)]


@pytest.mark.parametrize(("total", "shares"), CASES)
def test_random_split_sums_to_the_total_with_every_share_at_least_one(total: int, shares: int) -> None:
    rng = random.Random(1234)
    for _ in range(200):
        out = split_amounts(total, shares, "random", rng)
        assert len(out) == shares
        assert sum(out) == total
        assert min(out) >= 1


@pytest.mark.parametrize(("total", "shares"), CASES)
def test_random_shares_stay_under_twice_the_average_of_what_is_left(total: int, shares: int) -> None:
    rng = random.Random(99)
    for _ in range(200):
        out = split_amounts(total, shares, "random", rng)
        left = total
        for i, amount in enumerate(out[:-1]):
            remaining = shares - i
            assert amount < 2 * left / remaining, (out, i)
            left -= amount
        assert out[-1] == left  # the last share takes the rest


def test_random_split_is_deterministic_for_a_seeded_source() -> None:
    a = [split_amounts(500, 8, "random", random.Random(42)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    draws = {tuple(split_amounts(500, 8, "random", random.Random(seed))) for seed in range(20)}
    assert len(draws) > 1  # and it is random: other seeds, other splits


def test_random_split_draws_every_share_before_the_last() -> None:
    rng = random.Random(7)
    shares = [split_amounts(3, 2, "random", rng)[0] for _ in range(200)]
    assert set(shares) == {1, 2}  # both ways of splitting 3 into two happen


@pytest.mark.parametrize("split", ["equal", "random"])
@pytest.mark.parametrize(("total", "shares"), [(5, 0), (5, -1), (4, 5), (0, 1), (199, 200)])
def test_refused_below_one_point_per_share(total: int, shares: int, split: str) -> None:
    with pytest.raises(RequestError) as info:
        split_amounts(total, shares, split, random.Random(0))
    assert info.value.code == Err.BAD_REQUEST
