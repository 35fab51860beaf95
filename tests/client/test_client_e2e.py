"""chatd_client against a real in-process chatd (port 0, SQLite file in tmp_path)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

chatd_app = pytest.importorskip("chatd.app")
from chatd_client import AuthError, Bot, ChatError, Client, ClientClosed  # noqa: E402
from chatd_client.bot import IncomingMessage  # noqa: E402
from chatd_client.delivery import SYNC_PAGE  # noqa: E402

from chatd.auth import make_token  # noqa: E402

ENCODINGS = ["msgpack", "json"]


class Server:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.db = str(tmp_path / "c.db")
        # DMs to users who have not connected yet (as tests/conftest.py's servers)
        self.config = {"dm_unknown_users": True, **config}
        self.app: Any = None
        self.port = 0

    async def start(self) -> None:
        cfg = chatd_app.Config(host="127.0.0.1", port=self.port, db_path=self.db, **self.config)
        self.app = chatd_app.App(cfg)
        await self.app.start()
        self.port = self.app.port

    async def stop(self) -> None:
        await self.app.stop()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(user: str, encoding: str = "msgpack", **kwargs: Any) -> Client:
        token = make_token(user=user, type="owner", name=user.title())
        client = Client(server.url, token, encoding=encoding, backoff_min=0.05, **kwargs)
        await client.connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


class Inbox:
    """Collects a client's msg events in the background."""

    def __init__(self, client: Client) -> None:
        self.messages: list[dict[str, Any]] = []
        self.others: list[Any] = []  # every other event (presence, resync, reset, ...)
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: Client) -> None:
        async for event in client.events():
            if event.type == "msg":
                self.messages.append(event.d)
            else:
                self.others.append(event)
            self.changed.set()

    def texts(self, conv: str) -> list[str]:
        return [m.get("text", "") for m in self.messages if m["conv"] == conv and m["kind"] == "text"]

    async def wait_for(self, pred: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


async def circle_with(owner: Client, *others: Client) -> str:
    conv: str = (await owner.circle_create("Owners club", "interest"))["conv"]
    for other in others:
        await other.circle_join(conv)
    return conv


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_send_and_receive(connect: Callable[..., Any], encoding: str) -> None:
    alice = await connect("alice", encoding)
    bob = await connect("bob", encoding)
    assert alice.user["id"] == "alice"
    bob_inbox = Inbox(bob)
    conv = (await alice.dm_open("bob"))["conv"]
    assert conv == "dm:alice:bob"
    ack = await alice.send(conv, "hello bob, 你好", mentions=["bob"])
    assert ack["conv"] == conv and ack["dup"] is False
    await bob_inbox.wait_for(lambda: len(bob_inbox.messages) == 1)
    msg = bob_inbox.messages[0]
    assert (msg["from"], msg["text"], msg["seq"], msg["mentions"]) == ("alice", "hello bob, 你好", ack["seq"], ["bob"])
    assert msg["author"]["name"] == "Alice"
    page = await bob.history(conv)
    assert [m["text"] for m in page["messages"]] == ["hello bob, 你好"]


async def test_error_reply_raises_chat_error(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    with pytest.raises(ChatError) as err:
        await alice.history("c:424242")
    assert err.value.code in ("not_found", "not_member")
    assert err.value.temporary is False
    with pytest.raises(ChatError) as bad:  # refused locally by the shared schema
        await alice.request("history", conv="c:1", limit=1000)
    assert bad.value.code == "bad_request"
    assert (await alice.ping())["server_time"] > 0  # the socket is still fine


async def test_circle_ops(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    bob = await connect("bob", "json")
    created = await alice.circle_create("Shanghai owners", "city", description="ES8 and ET7")
    conv = created["conv"]
    assert created["owner"] == "alice"
    listed = await bob.circle_list(category="city")
    assert conv in [c["conv"] for c in listed["convs"]]
    await bob.circle_join(conv)
    members = await alice.members(conv)
    assert {m["user"]: m["role"] for m in members["members"]} == {"alice": "owner", "bob": "member"}
    await alice.circle_role(conv, "bob", "admin")
    await alice.circle_announce(conv, "meetup on Saturday")
    ack = await bob.send(conv, "see you there")
    assert (await alice.read(conv, ack["seq"]))["read_seq"] == ack["seq"]
    mine = {c["conv"] for c in (await bob.convs())["convs"]}
    assert conv in mine
    await bob.circle_leave(conv)
    with pytest.raises(ChatError) as err:
        await bob.send(conv, "still here?")
    assert err.value.code == "not_member"


async def test_notification_settings(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    conv = (await alice.circle_create("Beijing owners", "city"))["conv"]
    assert await alice.notify_quiet_hours(22 * 60, 7 * 60, 480) == {
        "muted_until": 0, "quiet": {"from": 1320, "to": 420, "utc_offset": 480}
    }
    assert (await alice.notify_mute(1_900_000_000_000, conv))["conv_muted_until"] == 1_900_000_000_000
    got = await alice.notify_settings(conv)
    assert got["conv_muted_until"] == 1_900_000_000_000 and got["quiet"]["from"] == 1320
    assert await alice.notify_quiet_hours(None) == {"muted_until": 0}
    with pytest.raises(ChatError) as bad:
        await alice.notify_quiet_hours(60, 60)
    assert bad.value.code == "bad_request"


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_every_message_once_in_order_across_disconnects(connect: Callable[..., Any], encoding: str) -> None:
    alice = await connect("alice")
    bob = await connect("bob", encoding)
    conv = await circle_with(alice, bob)
    dm = (await alice.dm_open("bob"))["conv"]
    inbox = Inbox(bob)
    n = 60

    async def talk() -> None:
        for i in range(n):
            await alice.send(conv if i % 3 else dm, f"m{i}")
            await asyncio.sleep(0.005)

    async def sabotage() -> None:
        for i in range(6):
            await asyncio.sleep(0.04)
            ws = bob._conn._ws
            if ws is None:
                continue
            if i % 2:
                ws.transport.abort()  # abrupt: no close frame
            else:
                await ws.close()  # clean close this side started

    await asyncio.gather(talk(), sabotage())
    expected_circle = [f"m{i}" for i in range(n) if i % 3]
    expected_dm = [f"m{i}" for i in range(n) if i % 3 == 0]
    await inbox.wait_for(
        lambda: len(inbox.texts(conv)) >= len(expected_circle) and len(inbox.texts(dm)) >= len(expected_dm)
    )
    await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
    assert inbox.texts(conv) == expected_circle
    assert inbox.texts(dm) == expected_dm
    for c in (conv, dm):
        got = [m["seq"] for m in inbox.messages if m["conv"] == c]
        assert got == list(range(got[0], got[0] + len(got))), f"{c}: not gapless/in order: {got}"


def hold_reconnects(client: Client) -> asyncio.Event:
    """Keep ``client`` offline after its next disconnect until the event is set."""
    release = asyncio.Event()
    real_open = client._conn._open

    async def held_open(new_token: bool) -> Any:
        await release.wait()
        return await real_open(new_token)

    client._conn._open = held_open  # type: ignore[method-assign]
    return release


async def test_messages_sent_while_offline_arrive_by_sync(connect: Callable[..., Any], server: Server) -> None:
    alice = await connect("alice")
    bob = await connect("bob", "json")
    dm = (await alice.dm_open("bob"))["conv"]
    circle = await circle_with(alice, bob)
    await alice.send(dm, "before")
    inbox = Inbox(bob)
    await inbox.wait_for(lambda: inbox.texts(dm) == ["before"])
    release = hold_reconnects(bob)
    # Restart the server: it drains with 4000; alice reconnects, bob is held offline.
    await server.stop()
    await server.start()
    for i in range(3):
        await alice.send(dm, f"dm {i}")  # waits for alice's reconnect
        await alice.send(circle, f"circle {i}")
    assert not bob.connected
    release.set()  # nothing is sent after this: only sync can bring them
    await inbox.wait_for(lambda: len(inbox.texts(dm)) == 4 and len(inbox.texts(circle)) == 3)
    await asyncio.sleep(0.2)
    assert inbox.texts(dm) == ["before", "dm 0", "dm 1", "dm 2"]
    assert inbox.texts(circle) == ["circle 0", "circle 1", "circle 2"]


async def test_long_absence_is_synced_in_pages(tmp_path: Path) -> None:
    srv = Server(tmp_path, send_rate=1e6, send_burst=10**6, request_rate=1e6, request_burst=10**6)
    await srv.start()
    try:
        async with (
            Client(srv.url, make_token(user="alice", type="owner")) as alice,
            Client(srv.url, make_token(user="bob", type="owner"), backoff_min=0.05) as bob,
        ):
            conv = (await alice.dm_open("bob"))["conv"]
            inbox = Inbox(bob)
            release = hold_reconnects(bob)
            bob._conn._ws.transport.abort()  # type: ignore[union-attr]
            n = SYNC_PAGE + 20  # more than one sync page
            for start in range(0, n, 100):
                await asyncio.gather(*(alice.send(conv, f"n{i}") for i in range(start, min(n, start + 100))))
            release.set()
            await inbox.wait_for(lambda: len(inbox.messages) >= n, within=30)
            await asyncio.sleep(0.2)
            assert [m["seq"] for m in inbox.messages] == list(range(1, n + 1))
    finally:
        await srv.stop()


async def test_first_connect_does_not_replay_old_history(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    conv = (await alice.dm_open("bob"))["conv"]
    await alice.send(conv, "old news")
    bob = await connect("bob")
    inbox = Inbox(bob)
    await alice.send(conv, "fresh")
    await inbox.wait_for(lambda: len(inbox.messages) >= 1)
    await bob._conn._ws.close()  # type: ignore[union-attr]  # reconnect + sync must not bring "old news"
    await alice.send(conv, "fresher")
    await inbox.wait_for(lambda: len(inbox.messages) >= 2)
    await asyncio.sleep(0.2)
    assert inbox.texts(conv) == ["fresh", "fresher"]


async def test_lost_push_is_fetched_with_history(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = (await alice.dm_open("bob"))["conv"]
    inbox = Inbox(bob)
    await alice.send(conv, "one")
    await inbox.wait_for(lambda: len(inbox.messages) == 1)
    # Lose the pushes of "two" and "three" on the way in (as a lossy bus would).
    real_put = bob._conn.inbox.put_nowait
    lost: list[str] = []

    def lossy_put(item: Any) -> None:
        if getattr(item, "type", None) == "msg" and item.d.get("text") in ("two", "three"):
            lost.append(item.d["text"])
            return
        real_put(item)

    bob._conn.inbox.put_nowait = lossy_put  # type: ignore[method-assign]
    for text in ("two", "three", "four"):
        await alice.send(conv, text)
    await inbox.wait_for(lambda: len(inbox.messages) == 4)
    assert lost == ["two", "three"]
    assert inbox.texts(conv) == ["one", "two", "three", "four"]
    assert [m["seq"] for m in inbox.messages] == [1, 2, 3, 4]


async def test_retry_with_same_cid_is_not_a_second_message(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    conv = (await alice.dm_open("bob"))["conv"]
    first = await alice.send(conv, "once", cid="cid-1")
    again = await alice.send(conv, "once", cid="cid-1")
    assert first["dup"] is False and again["dup"] is True
    assert again["seq"] == first["seq"]
    texts = [m["text"] for m in (await alice.history(conv))["messages"]]
    assert texts == ["once"]


async def test_send_whose_reply_is_lost_is_retried_after_reconnect(
    connect: Callable[..., Any],
) -> None:
    """The message is committed but the socket dies before the ack: the client
    reconnects and retries with the same cid; the server answers dup=true."""
    alice = await connect("alice")
    conv = (await alice.dm_open("bob"))["conv"]

    class LoseNextReply(dict[Any, Any]):
        armed = True

        def get(self, key: Any, default: Any = None) -> Any:
            if self.armed and key in self:
                self.armed = False
                ws = alice._conn._ws
                assert ws is not None
                ws.transport.abort()
                return None
            return super().get(key, default)

    alice._conn._pending = LoseNextReply()
    ack = await asyncio.wait_for(alice.send(conv, "exactly one"), 10)
    assert ack["dup"] is True
    texts = [m["text"] for m in (await alice.history(conv))["messages"]]
    assert texts == ["exactly one"]


async def test_send_while_disconnected_waits_for_reconnect(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    conv = (await alice.dm_open("bob"))["conv"]
    alice._conn._ws.transport.abort()  # type: ignore[union-attr]
    ack = await asyncio.wait_for(alice.send(conv, "queued"), 10)
    assert ack["dup"] is False
    assert [m["text"] for m in (await alice.history(conv))["messages"]] == ["queued"]


async def test_rate_limited_sends_are_retried(tmp_path: Path) -> None:
    srv = Server(tmp_path, send_rate=20.0, send_burst=3)
    await srv.start()
    try:
        async with Client(srv.url, make_token(user="alice", type="owner")) as alice:
            conv = (await alice.dm_open("bob"))["conv"]
            acks = [await alice.send(conv, f"n{i}") for i in range(10)]
            assert [a["dup"] for a in acks] == [False] * 10
            page = await alice.history(conv)
            assert [m["text"] for m in page["messages"]] == [f"n{i}" for i in range(10)]
    finally:
        await srv.stop()


async def test_bad_tokens(server: Server) -> None:
    forged = make_token(user="alice", type="owner", secret="not-the-server-secret-but-long-enough-for-hs256")
    with pytest.raises(AuthError) as err:
        await Client(server.url, forged).connect()
    assert err.value.code == 4101
    expired = make_token(user="alice", type="owner", ttl=-60)
    with pytest.raises(AuthError) as err:
        await Client(server.url, expired).connect()
    assert err.value.code == 4102


async def test_token_provider_replaces_an_expired_token(server: Server) -> None:
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        ttl = -60 if len(calls) == 1 else 3600
        return make_token(user="alice", type="owner", ttl=ttl)

    async with Client(server.url, token_provider=provider) as alice:
        assert alice.user["id"] == "alice"
        assert (await alice.ping())["server_time"] > 0
    assert len(calls) == 2


async def test_protocol_violation_stops_the_client(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    events = alice.events()
    await alice._conn._ws.send(b"\xc1\xff", text=False)  # type: ignore[union-attr]  # garbage: 4200
    with pytest.raises(ClientClosed) as err:
        await asyncio.wait_for(anext(events), 5)
    assert err.value.code == 4200
    with pytest.raises(ClientClosed):
        await alice.ping()


async def test_connect_error_is_clear(tmp_path: Path) -> None:
    from chatd_client import ConnectError

    with pytest.raises(ConnectError, match="cannot connect"):
        await Client("ws://127.0.0.1:1/", "x", open_timeout=2).connect()


async def test_bot_replies_and_ignores_itself(connect: Callable[..., Any], server: Server) -> None:
    alice = await connect("alice")
    bot = Bot(server.url, make_token(user="echo-bot", type="bot", name="Echo"), backoff_min=0.05)
    seen: list[str] = []

    @bot.on_message
    async def echo(msg: IncomingMessage) -> None:
        seen.append(msg.text)
        await msg.reply(f"echo: {msg.text}")

    running = asyncio.create_task(bot.run())
    inbox = Inbox(alice)
    await asyncio.wait_for(bot.ready.wait(), 5)
    conv = (await alice.dm_open("echo-bot"))["conv"]
    await alice.send(conv, "ping")
    await inbox.wait_for(lambda: "echo: ping" in inbox.texts(conv))
    await asyncio.sleep(0.2)
    assert seen == ["ping"]  # its own reply did not trigger it
    assert inbox.texts(conv) == ["ping", "echo: ping"]
    await bot.stop()
    await asyncio.wait_for(running, 5)


async def run_chat(url: str, token: str, stdin: str, *args: str) -> tuple[int, str, str]:
    exe = Path(sys.executable).with_name("chatd-chat")
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "--url",
        url,
        "--token",
        token,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_terminal_chat_with_piped_stdin(connect: Callable[..., Any], server: Server) -> None:
    bob = await connect("bob")
    inbox = Inbox(bob)
    token = make_token(user="alice", type="owner", name="Alice")
    code, out, err = await run_chat(
        server.url, token, "/dm bob\nhello from the terminal\n/create Night riders interest\n/circles\n"
    )
    assert code == 0, err
    assert re.search(r"^\[dm:alice:bob #\d+\] Alice: hello from the terminal$", out, re.M), out
    assert re.search(r"^c:\d+  Night riders  \(interest, 1 members\)$", out, re.M), out
    await inbox.wait_for(lambda: inbox.texts("dm:alice:bob") == ["hello from the terminal"])

    # a newcomer's one-liner: no conversation chosen yet -> a clear error, status 1
    code, out, err = await run_chat(server.url, token, "hi\n")
    assert code == 1
    assert "no current conversation" in err

    code, out, err = await run_chat(server.url, token, "again\n/history 5\n", "--to", "dm:alice:bob")
    assert code == 0, err
    assert "Alice: again" in out and "Alice: hello from the terminal" in out


async def test_points_tips_and_red_packets_through_the_client(connect: Callable[..., Any]) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv: str = (await alice.dm_open("bob"))["conv"]
    await alice.send(conv, "good morning")  # alice's daily check-in
    ack = await bob.send(conv, "morning! the new NOMI update is out")
    deadline = asyncio.get_running_loop().time() + 5
    while (await alice.points_balance())["points"] < 5:  # awarded a moment after the message
        assert asyncio.get_running_loop().time() < deadline, "no check-in award"
        await asyncio.sleep(0.05)
    tid = "tip-1"
    assert (await alice.tip(conv, ack["seq"], 2, tid=tid))["to"] == "bob"
    assert (await alice.tip(conv, ack["seq"], 2, tid=tid))["dup"] is True
    rp = await alice.red_packet(conv, total=3, shares=1, split="equal")
    got = await bob.claim(rp["id"])
    assert got["amount"] == 3 and got["left"] == 0
    with pytest.raises(ChatError) as err:
        await alice.tip(conv, ack["seq"], 100)
    assert err.value.code == "insufficient_points"
    assert (await alice.points_balance())["points"] == 0
    ledger = await alice.points_ledger()
    assert {e["rule"] for e in ledger["entries"]} >= {"checkin", "tip", "redpacket.hold"}
    assert (await bob.points_top())["top"][0]["user"] in ("alice", "bob")
