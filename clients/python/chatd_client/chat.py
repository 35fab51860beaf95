"""``chatd-chat``: a terminal chat client.

::

    CHATD_TOKEN=... chatd-chat --url ws://127.0.0.1:8765 [--to CONV]
    chatd-chat --token-file ~/.chatd-token --url ...

Incoming messages print as ``[conv #seq] name: text``. A plain line is sent to
the current conversation; lines starting with ``/`` are commands (``/help``).
Stdin is read in a thread so that it also works piped: at end of input the
client waits about a second for the last echoes, then exits (status 1 if a
command failed, 2 if it could not connect or was disconnected for good).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any, TextIO

from .client import Client
from .errors import ChatError, ClientClosed, ClientError

HELP = """\
commands:
  /dm USER               open a direct conversation with USER and switch to it
  /create NAME CATEGORY  create a circle (category: city, interest, profession, family)
  /circles [CATEGORY]    list circles
  /join CONV             join a circle and switch to it
  /leave CONV            leave a circle
  /to CONV               switch the current conversation
  /history [N]           show the last N messages (20) of the current conversation
  /convs                 list your conversations
  /quit                  exit
  /help                  this text
anything else is sent to the current conversation"""


def format_message(msg: dict[str, Any]) -> str:
    """``[conv #seq] name: text`` (system messages as ``* ...``)."""
    head = f"[{msg.get('conv')} #{msg.get('seq')}]"
    name = (msg.get("author") or {}).get("name") or msg.get("from", "?")
    if msg.get("kind") == "system":
        event = msg.get("event") or {}
        kind = event.get("type", "?")
        details = " ".join(f"{k}={v}" for k, v in event.items() if k != "type")
        return f"{head} * {name} {kind} {details}".rstrip()
    if msg.get("recalled"):
        return f"{head} {name}: (recalled)"
    return f"{head} {name}: {msg.get('text', '')}"


class Chat:
    """Command interpreter: one line in, requests and output out."""

    def __init__(self, client: Client, out: TextIO, err: TextIO, current: str | None) -> None:
        self.client = client
        self.out = out
        self.err = err
        self.current = current
        self.failures = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def fail(self, text: str) -> None:
        self.failures += 1
        print(f"error: {text}", file=self.err, flush=True)

    async def handle(self, line: str) -> bool:
        """Run one line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            await self.send(line)
            return True
        cmd, *args = line.split()
        try:
            return await self.command(cmd, args)
        except ChatError as exc:
            self.fail(str(exc))
        except ClientClosed:
            raise
        except ClientError as exc:
            self.fail(str(exc))
        return True

    async def send(self, text: str) -> None:
        if self.current is None:
            self.fail("no current conversation: use /to CONV, /dm USER or /join CONV")
            return
        try:
            await self.client.send(self.current, text)
        except ChatError as exc:
            self.fail(f"not sent: {exc}")

    async def command(self, cmd: str, args: list[str]) -> bool:
        c = self.client
        if cmd in ("/quit", "/exit"):
            return False
        if cmd == "/help":
            self.say(HELP)
        elif cmd == "/dm" and len(args) == 1:
            conv = await c.dm_open(args[0])
            self.switch(conv["conv"])
        elif cmd == "/create" and len(args) >= 2:
            conv = await c.circle_create(" ".join(args[:-1]), args[-1])
            self.say(f"created {conv['conv']} {conv.get('name', '')}")
            self.switch(conv["conv"])
        elif cmd == "/circles" and len(args) <= 1:
            page = await c.circle_list(category=args[0] if args else None, limit=100)
            for conv in page.get("convs", []):
                self.say(
                    f"{conv['conv']}  {conv.get('name', '')}  "
                    f"({conv.get('category', '?')}, {conv.get('members', '?')} members)"
                )
        elif cmd == "/join" and len(args) == 1:
            await c.circle_join(args[0])
            self.switch(args[0])
        elif cmd == "/leave" and len(args) == 1:
            await c.circle_leave(args[0])
            self.say(f"left {args[0]}")
            if self.current == args[0]:
                self.current = None
        elif cmd == "/to" and len(args) == 1:
            self.switch(args[0])
        elif cmd == "/history" and len(args) <= 1 and (not args or args[0].isdigit()):
            if self.current is None:
                self.fail("no current conversation")
                return True
            limit = max(1, min(100, int(args[0]) if args else 20))
            page = await c.history(self.current, limit=limit)
            for msg in page.get("messages", []):
                self.say(format_message(msg))
        elif cmd == "/convs" and not args:
            page = await c.convs(limit=200)
            for conv in page.get("convs", []):
                mark = "*" if conv["conv"] == self.current else " "
                self.say(
                    f"{mark} {conv['conv']}  {conv.get('name') or conv.get('peer') or ''}  "
                    f"unread {conv.get('unread', 0)}"
                )
        else:
            self.fail(f"bad command {' '.join([cmd, *args])!r}; /help lists commands")
        return True

    def switch(self, conv: str) -> None:
        self.current = conv
        self.say(f"-> {conv}")


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Thread: blocking reads of stdin, handed to the event loop; None at EOF."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)
    except RuntimeError:
        pass  # the loop closed (/quit) while this thread was still reading


async def run(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token_value, encoding=args.encoding)
    try:
        await client.connect()
    except ClientError as exc:
        print(f"error: cannot connect: {exc}", file=sys.stderr, flush=True)
        return 2
    chat = Chat(client, sys.stdout, sys.stderr, args.to)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    lost: list[ClientClosed] = []

    async def printer() -> None:
        try:
            async for event in client.events():
                if event.type == "msg":
                    chat.say(format_message(event.d))
        except ClientClosed as exc:
            lost.append(exc)
            lines.put_nowait(None)

    printing = asyncio.create_task(printer())
    user = client.user
    print(
        f"connected as {user.get('id')} ({user.get('type')}); /help for commands",
        file=sys.stderr,
        flush=True,
    )
    threading.Thread(target=_read_stdin, args=(asyncio.get_running_loop(), lines), daemon=True).start()
    try:
        while (line := await lines.get()) is not None and not lost:
            if not await chat.handle(line):
                break
        else:
            if not lost:
                await asyncio.sleep(args.linger)  # let the last echoes arrive
    except ClientClosed as exc:
        lost.append(exc)
    finally:
        await client.close()
        printing.cancel()
    if lost:
        print(f"error: disconnected: {lost[0]}", file=sys.stderr, flush=True)
        return 2
    return 1 if chat.failures else 0


def _token(args: argparse.Namespace) -> str:
    """The token, from (first found) --token-file, $CHATD_TOKEN, --token."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read(16384).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read --token-file {args.token_file}: {exc}") from None
    else:
        token = os.environ.get("CHATD_TOKEN", "").strip() or (args.token or "").strip()
    if not token:
        raise ValueError("give the token in a file (--token-file), in CHATD_TOKEN, or with --token")
    if len(token) > 8192 or any(c.isspace() for c in token):
        raise ValueError("the token is not a token (too long, or has spaces in it)")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatd-chat", description="chatd terminal chat")
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server WebSocket URL")
    parser.add_argument(
        "--token-file", metavar="PATH", help="a file holding the auth token (or set CHATD_TOKEN); preferred to --token"
    )
    parser.add_argument("--token", help="the auth token itself (visible to other users in ps: prefer the others)")
    parser.add_argument("--to", metavar="CONV", help="start in this conversation")
    parser.add_argument("--encoding", choices=("msgpack", "json"), default="msgpack")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to wait for echoes at end of input")
    args = parser.parse_args(argv)
    try:
        args.token_value = _token(args)
    except ValueError as exc:
        print(f"chatd-chat: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
