"""chatd_client in live sessions against a real in-process chatd: the wrappers, audience
chat lines as they come, and a fresh snapshot after a reconnect (nothing is replayed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from chatd_client import ChatError, Client

from chatd.auth import make_token

from .test_client_e2e import Inbox, Server, hold_reconnects
from .test_client_e2e import server as server  # the same server process per test


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(user: str, type: str = "owner", roles: tuple[str, ...] = (), **kw: Any) -> Client:
        token = make_token(user=user, type=type, name=user.title(), roles=roles)
        client = Client(server.url, token, backoff_min=0.05, **kw)
        await client.connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def drop(client: Client) -> asyncio.Event:
    """Drop ``client``'s socket and keep it offline until the event is set."""
    release = hold_reconnects(client)
    ws = client._conn._ws
    assert ws is not None
    ws.transport.abort()
    return release


async def live_session(host: Client, **fields: Any) -> str:
    info = await host.live_create("用户面对面 Meet the team", hosts=["host"], moderators=["mod"], **fields)
    await host.live_state(info["session"], "live")
    return str(info["session"])


async def test_ask_vote_answer_and_chat_through_the_client(connect: Callable[..., Any]) -> None:
    host = await connect("host", "staff", ("host",))
    viewer = await connect("viewer")
    asker = await connect("asker")
    session = await live_session(host, anonymous=True)
    snap = await viewer.live_join(session)
    assert snap["session"]["state"] == "live" and snap["questions"] == [] and snap["role"] is None
    inbox = Inbox(viewer)

    q = (await asker.live_ask(session, "什么时候开换电站?", anonymous=True))["question"]
    assert q["asker"] == "asker"  # the asker's own reply names them
    vote = await viewer.live_vote(session, q["id"])
    assert vote == {"id": q["id"], "votes": 1, "on": True, "changed": True}
    assert (await viewer.live_vote(session, q["id"], on=False))["votes"] == 0
    await host.live_answer(session, q["id"], text="明年 next year")
    line = await asker.live_chat(session, "加油")

    def pushed(kind: str) -> list[dict[str, Any]]:
        return [e.d for e in inbox.others if e.type == kind]

    await inbox.wait_for(lambda: any(d.get("state") == "answered" for d in pushed("live.question"))
                         and any(m["conv"] == line["conv"] for m in inbox.messages))
    shown = [d for d in pushed("live.question") if d["id"] == q["id"]]
    assert shown[0]["asker"] is None and shown[0]["text"] == "什么时候开换电站?"  # anonymous to the audience
    assert shown[-1]["answer"] == "明年 next year"
    chat = [m for m in inbox.messages if m["conv"] == line["conv"]]
    assert [(m["from"], m["text"]) for m in chat] == [("asker", "加油")]

    queue = await host.live_queue(session, state="answered")
    assert [x["asker"] for x in queue["questions"]] == ["asker"]  # hosts see who asked
    with pytest.raises(ChatError) as err:
        await viewer.live_queue(session)
    assert err.value.code == "forbidden"


async def test_a_reconnect_rejoins_with_a_fresh_snapshot(connect: Callable[..., Any]) -> None:
    host = await connect("host", "staff", ("host",))
    viewer = await connect("viewer")
    asker = await connect("asker")
    session = await live_session(host)
    await viewer.live_join(session)
    inbox = Inbox(viewer)
    release = drop(viewer)  # pushes while away are not replayed
    await asker.live_ask(session, "while you were away")
    release.set()
    await inbox.wait_for(lambda: any(e.type == "live.snapshot" for e in inbox.others))
    snap = next(e.d for e in inbox.others if e.type == "live.snapshot")
    assert [x["text"] for x in snap["questions"]] == ["while you were away"]
    # the rejoined socket gets live pushes again
    await asker.live_chat(session, "back?")
    await inbox.wait_for(lambda: any(m.get("text") == "back?" for m in inbox.messages))


async def test_a_session_that_ended_while_away_is_left(connect: Callable[..., Any]) -> None:
    host = await connect("host", "staff", ("host",))
    viewer = await connect("viewer")
    session = await live_session(host)
    await viewer.live_join(session)
    inbox = Inbox(viewer)
    release = drop(viewer)
    await host.live_state(session, "ended")
    release.set()
    await inbox.wait_for(lambda: any(e.type == "live.left" for e in inbox.others))
    left = next(e.d for e in inbox.others if e.type == "live.left")
    assert left == {"session": session, "reason": "conflict"}
    archive = await viewer.live_archive(session)
    assert archive["session"]["state"] == "ended"


async def test_polls_through_the_client(connect: Callable[..., Any]) -> None:
    host = await connect("host", "staff", ("host",))
    viewer = await connect("viewer")
    session = await live_session(host)
    await viewer.live_join(session)
    poll = await host.poll_create(session, "Next city?", ["Hefei", "Xi'an"], closes_ts=2**42, weighted=True)
    voted = await viewer.poll_vote(poll["poll"], [1])
    assert voted["options"] == [1] and voted["weight"] >= 1
    closed = await host.poll_close(poll["poll"])
    assert closed["closed"] is True and closed["changed"] is True
    with pytest.raises(ChatError) as err:
        await viewer.poll_vote(poll["poll"], [0])
    assert err.value.code == "conflict"
