"""Which address X-Forwarded-For is believed to name (pure logic)."""

from __future__ import annotations

from chatd.edge.proxy import forwarded_for, trusted_networks

T = trusted_networks(["10.0.0.0/8", "::1"])


def test_only_a_trusted_peer_is_believed() -> None:
    assert forwarded_for(("192.0.2.1", 5), ["203.0.113.7"], T) is None
    assert forwarded_for(("10.1.2.3", 5), ["203.0.113.7"], T) == "203.0.113.7"
    assert forwarded_for(("::1", 5, 0, 0), ["2001:db8::1"], T) == "2001:db8::1"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    assert forwarded_for(("10.1.2.3", 5), ["198.51.100.1, 203.0.113.7, 10.2.2.2"], T) == "203.0.113.7"
    assert forwarded_for(("10.1.2.3", 5), ["198.51.100.1", "203.0.113.7"], T) == "203.0.113.7"  # two headers
    assert forwarded_for(("10.1.2.3", 5), ["10.2.2.2"], T) is None  # only proxies: the peer's own
    assert forwarded_for(("10.1.2.3", 5), ["203.0.113.7, junk"], T) is None
    assert forwarded_for(("10.1.2.3", 5), [], T) is None
    assert forwarded_for(None, ["203.0.113.7"], T) is None
