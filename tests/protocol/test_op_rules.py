"""The op table's rules: a retry-safe flag and a scope for every op, in step with
the README's retry list and with what the client resends."""

from __future__ import annotations

import re

from chatd_client import IDEMPOTENT_OPS
from chatd_protocol import ADMIN_API_OPS, OPS, RETRY_SAFE, RULES, Scope
from support import ROOT


def test_every_op_has_exactly_one_rule() -> None:
    assert RULES.keys() == OPS.keys()
    assert RULES["auth"].scope is Scope.ANYONE
    scoped = {"auth", "inbox", "service.claim", "service.to_human", "live.create"}
    assert all(rule.scope is Scope.USER for op, rule in RULES.items() if op not in scoped and not _admin(op))
    assert all(rule.scope is Scope.ADMIN for op, rule in RULES.items() if _admin(op))
    assert RULES["inbox"].scope is Scope.STAFF  # a staff member's groups
    assert RULES["service.claim"].scope is RULES["service.to_human"].scope is Scope.BOT  # bots' arbitration
    assert RULES["live.create"].scope is Scope.STAFF  # staff with the exec or host role, or a backend
    # a backend also runs these on the admin API; the op decides what it may do
    backend = {"service.status", "service.requests", "service.close", "live.create", "live.update", "live.state",
               "live.moderate", "live.merge", "live.answer", "live.mark", "live.queue", "live.mute",
               "live.archive", "poll.get"}
    assert {op for op, rule in RULES.items() if rule.backend} == backend
    assert ADMIN_API_OPS == {op for op in RULES if _admin(op)} | backend


def _admin(op: str) -> bool:
    """The backend's ops: the admin API's, and a service group's provisioning and posts."""
    return op.startswith(("admin.", "service.provision", "service.members", "service.handover", "service.post",
                          "service.campaign", "service.report"))


def test_the_client_resends_what_the_table_says_is_safe() -> None:
    assert IDEMPOTENT_OPS == RETRY_SAFE
    assert {"send", "read", "history", "sync", "tip", "redpacket.send", "redpacket.claim"} <= RETRY_SAFE
    assert not {"auth", "circle.create", "circle.join", "recall"} & RETRY_SAFE


def test_the_readme_retry_section_agrees_with_the_table() -> None:
    text = (ROOT / "protocol" / "README.md").read_text()
    section = text[text.index("### Retrying after a dropped connection") :]
    section = section[: section.index("\n## ")]
    safe_part, _, once_part = section.partition("Not idempotent:")
    once_part = once_part.split("after a drop")[0]  # what follows names reads to check the state with
    named_safe = set(re.findall(r"`([a-z._]+)`", safe_part)) & OPS.keys()
    named_once = set(re.findall(r"`([a-z._]+)`", once_part)) & OPS.keys()
    assert named_safe and named_once
    assert named_safe <= RETRY_SAFE, named_safe - RETRY_SAFE
    assert not named_once & RETRY_SAFE, named_once & RETRY_SAFE
