"""Property-based fuzzing of a real ``chatd serve`` process, both codecs, every op
of the op table (generators and checks: tests/fuzzkit.py; the long run:
bench/fuzz.py).

For every generated case, on a socket of its own:

- every frame with a valid id gets exactly one answer with that id, and an error
  code in it is one protocol/README.md documents (never ``internal``), the one
  the spec gives for that frame where it gives one (``bad_request`` for bad
  arguments, ``unknown_op``, ``already_authenticated``);
- a frame the spec says closes the socket closes it with the code it says, and
  the server never closes with 1011;
- afterwards a fresh control client still gets a round trip answered, the
  process is alive and its log has no traceback (nor any ERROR line).

Reproducible: ``derandomize=True`` and no example database; one server for the
module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fuzzkit as fk
import pytest
from chatdproc import Proc
from hypothesis import given, settings
from hypothesis import strategies as st
from support import free_port, token

pytestmark = pytest.mark.slow

WAIT = 10.0  # s for an answer, a close or the control round trip: more is a hang


@dataclass
class Fuzzed:
    proc: Proc
    runner: asyncio.Runner
    world: fk.World
    url: str
    log_offset: int = 0

    def check(self, run: Callable[[fk.Tally], Awaitable[None]]) -> None:
        """Run one example, then the control round trip; fail on any departure from the spec."""
        tally = fk.Tally()
        self.runner.run(asyncio.wait_for(run(tally), 6 * WAIT))
        self.runner.run(fk.control(self.url, self.world, tally, WAIT))
        failures = [f"{cat}: {line}" for cat, line in tally.problems]
        if self.proc.p is None or self.proc.p.poll() is not None:
            failures.append("chatd died:\n" + self.proc.log.read_text()[-3000:])
        self.log_offset, bad = fk.log_problems(self.proc.log, self.log_offset)
        failures += [f"server log: {line}" for line in bad]
        assert not failures, "\n".join(failures)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' report of a failing example
        printer.text(f"<chatd on {self.url}, log {self.proc.log}>")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    proc = Proc(tmp / "chatd.db", free_port(), tmp / "chatd.log", *fk.SERVE_ARGS, "--sync", "normal")
    url = f"ws://127.0.0.1:{proc.port}/"
    with asyncio.Runner() as runner:
        proc.start()
        try:
            runner.run(proc.healthy())
            world = runner.run(fk.make_world(url, token))
            yield Fuzzed(proc, runner, world, url)
        finally:
            proc.stop()


@pytest.mark.parametrize("codec", fk.CODEC_NAMES)
@settings(fk.SETTINGS, max_examples=200)
@given(data=st.data())
def test_authenticated_sockets_answer_as_the_spec_says(fuzzed: Fuzzed, codec: str, data: st.DataObject) -> None:
    case = data.draw(fk.cases(fuzzed.world, codec), label="case")
    fuzzed.check(lambda tally: fk.run_case(fuzzed.url, case, fuzzed.world, tally, WAIT))


@pytest.mark.parametrize("codec", fk.CODEC_NAMES)
@settings(fk.SETTINGS, max_examples=80)
@given(data=st.data())
def test_first_frames_are_answered_or_closed_as_the_spec_says(fuzzed: Fuzzed, codec: str, data: st.DataObject) -> None:
    frame = data.draw(fk.first_frames(fuzzed.world, codec), label="first frame")
    fuzzed.check(lambda tally: fk.run_first(fuzzed.url, codec, frame, fuzzed.world, tally, WAIT))
