"""chatd-chat takes its token from a file or the environment, not only the
command line where other users can read it (issue 10, item 15)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from support import url

from chatd.app import App
from chatd.auth import make_token

EXE = Path(sys.executable).with_name("chatd-chat")


async def chat(args: list[str], env: dict[str, str], stdin: str = "/circles\n") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_the_token_from_a_file_or_the_environment(server: App, tmp_path: Path) -> None:
    token = make_token(user="alice", type="owner")
    path = tmp_path / "token"
    path.write_text(token + "\n")
    code, err = await chat(["--url", url(server), "--linger", "0.1", "--token-file", str(path)], {})
    assert code == 0 and "connected as alice" in err, err
    code, err = await chat(["--url", url(server), "--linger", "0.1"], {"CHATD_TOKEN": token})
    assert code == 0 and "connected as alice" in err, err


@pytest.mark.parametrize(
    ("args", "content"),
    [
        ([], None),  # no token anywhere
        (["--token-file", "/nonexistent/token"], None),
        (["--token-file", "{file}"], ""),
        (["--token-file", "{file}"], "two words"),
        (["--token-file", "{file}"], "x" * 9000),
        (["--token-file", "{file}"], "\xff\xfe"),
    ],
)
async def test_no_usable_token_exits_2(server: App, tmp_path: Path, args: list[str], content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    args = [a.replace("{file}", str(path)) for a in args]
    env = {k: v for k, v in os.environ.items() if k != "CHATD_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        str(EXE), "--url", url(server), *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and err.decode().startswith("chatd-chat:"), err
