"""chatd/redisurl.py: Redis URLs (one server or a cluster) and the cluster's key
space (pure logic; the clients on real servers are tested where they are used)."""

from __future__ import annotations

import pytest

from chatd import redisurl


def test_crc16_and_slots_match_redis() -> None:
    assert redisurl.crc16(b"123456789") == 0x31C3  # CRC16-XMODEM's check value (Redis Cluster spec)
    # CLUSTER KEYSLOT answers of a real server
    assert redisurl.slot("foo") == 12182 and redisurl.slot(b"bar") == 5061
    # a hash tag: only what is inside the first non-empty {...} counts
    assert redisurl.slot("{user1000}.following") == redisurl.slot("{user1000}.followers") == redisurl.slot("user1000")
    assert redisurl.slot("foo{}{bar}") == redisurl.crc16(b"foo{}{bar}") % redisurl.SLOTS  # empty tag: the whole key
    assert redisurl.slot("foo{{bar}}zap") == redisurl.slot("{bar")  # from the first { to the first } after it
    assert all(0 <= redisurl.slot(f"k{i}") < redisurl.SLOTS for i in range(1000))


def test_cluster_urls_give_their_seeds_and_each_node_its_own_url() -> None:
    url = "rediss+cluster://app:s%3Acret@10.0.0.1:7000,[::1]:7001,redis-2"
    assert redisurl.is_cluster(url) and not redisurl.is_cluster("redis://10.0.0.1:6379")
    assert redisurl.seeds(url) == [("10.0.0.1", 7000), ("::1", 7001), ("redis-2", 6379)]
    assert redisurl.credentials(url) == ("app", "s:cret")
    assert redisurl.node_url(url, "10.0.0.9", 7005) == "rediss://app:s%3Acret@10.0.0.9:7005"
    assert redisurl.node_url(url, "fe80::1", 7005) == "rediss://app:s%3Acret@[fe80::1]:7005"
    assert redisurl.node_url("redis+cluster://h:1", "h2", 2) == "redis://h2:2"
    assert redisurl.credentials("redis://h:1") == (None, None)
    assert redisurl.credentials("redis://:pw@h:1") == (None, "pw")


def test_a_password_never_reaches_a_log() -> None:
    assert redisurl.redact("redis://app:secret@h:6379/0") == "redis://app:***@h:6379/0"
    assert "secret" not in redisurl.redact("redis+cluster://:secret@a:1,b:2")
    assert redisurl.redact("redis://h:6379") == "redis://h:6379"


def test_hash_tags_only_on_a_cluster() -> None:
    assert redisurl.tag("alice", True) == "{alice}" and redisurl.tag("alice", False) == "alice"


@pytest.mark.parametrize(
    "url",
    [
        "http://h:6379",  # not Redis
        "h:6379",  # no scheme
        "redis+cluster://",  # no seed
        "redis+cluster://:7000",  # no host
        "redis+cluster://h:0",
        "redis+cluster://h:65536",
        "redis+cluster://h:port",
        "redis+cluster://a:1,,b:2",  # an empty seed
        "redis+cluster://" + ",".join(f"h{i}:1" for i in range(65)),  # too many seeds
        "redis://[::1",  # not a URL
    ],
)
def test_urls_chatd_cannot_use_are_refused_with_a_sentence(url: str) -> None:
    with pytest.raises(ValueError, match="redis-url"):
        redisurl.check(url)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://u:p@h", "unix:///run/redis.sock", "redis+cluster://h:1"])
def test_urls_chatd_can_use_pass(url: str) -> None:
    redisurl.check(url)
