"""Circles: create, discover, join/leave, members, admins, announcement, mute."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatd_protocol import Err, RequestError

from ..interactions import Interaction
from ..store import conversations
from ..store.conversations import ConvState, Event
from ..store.engine import write_op
from .base import commit, member_state

if TYPE_CHECKING:
    from ..conn import Conn


def _author(conn: Conn) -> dict[str, Any]:
    assert conn.identity is not None
    return conn.identity.author()


async def create(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    certified = d.get("certified", False)
    if certified and not (conn.identity and conn.identity.is_staff):
        raise RequestError(Err.FORBIDDEN, "only staff may create certified circles")
    svc = conn.svc

    def after(result: tuple[dict[str, Any], Event]) -> None:
        svc.fanout.user_follow(conn.user, result[0]["conv"])

    info, _ = await commit(
        svc,
        write_op(
            conversations.create_circle,
            owner=conn.user,
            author=_author(conn),
            name=d["name"],
            category=d["category"],
            description=d.get("description", ""),
            certified=certified,
            ts=svc.now_ms(),
        ),
        after,
    )
    return info


async def list_(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    items, nxt = await conversations.list_circles(conn.svc.store, d.get("category"), d.get("after"), d.get("limit", 20))
    return {"convs": items, "next": nxt}


async def join(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc, conv, user = conn.svc, d["conv"], conn.user
    now = svc.now_ms()

    def after(result: tuple[dict[str, Any], Event]) -> None:
        svc.fanout.changed(conv, lambda s: s.members.__setitem__(user, "member"))
        svc.fanout.user_follow(user, conv)
        svc.interactions.emit(Interaction("circle.joined", user, conv, result[1].msg["seq"], now))

    info, _ = await commit(svc, write_op(conversations.join, conv=conv, user=user, author=_author(conn), ts=now), after)
    return info


async def leave(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc, conv, user = conn.svc, d["conv"], conn.user

    def forget(state: ConvState) -> None:
        state.members.pop(user, None)
        state.muted.pop(user, None)

    def after(result: Event) -> None:
        # the leave event is published after this: the leaver's own sockets
        # stop following first, and learn of it from the reply
        svc.fanout.changed(conv, forget)
        svc.fanout.user_follow(user, conv, on=False)

    await commit(svc, write_op(conversations.leave, conv=conv, user=user, author=_author(conn), ts=svc.now_ms()), after)
    return {}


async def role(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc, conv, target, new_role = conn.svc, d["conv"], d["user"], d["role"]
    await member_state(conn, conv)
    await commit(
        svc,
        write_op(
            conversations.set_role,
            conv=conv,
            actor=conn.user,
            author=_author(conn),
            user=target,
            role=new_role,
            ts=svc.now_ms(),
        ),
        lambda _: svc.fanout.changed(conv, lambda s: s.members.__setitem__(target, new_role)),
    )
    return {}


async def announce(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc, conv = conn.svc, d["conv"]
    await member_state(conn, conv)
    event = await commit(
        svc,
        write_op(
            conversations.announce, conv=conv, actor=conn.user, author=_author(conn), text=d["text"], ts=svc.now_ms()
        ),
    )
    return {"seq": event.msg["seq"]}


async def mute(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc, conv, target = conn.svc, d["conv"], d["user"]
    await member_state(conn, conv)
    now = svc.now_ms()
    until = now + d["seconds"] * 1000 if d["seconds"] else 0

    def apply(state: ConvState) -> None:
        if until:
            state.muted[target] = until
        else:
            state.muted.pop(target, None)

    await commit(
        svc,
        write_op(
            conversations.mute, conv=conv, actor=conn.user, author=_author(conn), user=target, until=until, ts=now
        ),
        lambda _: svc.fanout.changed(conv, apply),
    )
    return {"until": until}


async def members(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    await member_state(conn, d["conv"])
    items, nxt = await conversations.members_page(conn.svc.store, d["conv"], d.get("after"), d.get("limit", 50))
    return {"members": items, "next": nxt}
