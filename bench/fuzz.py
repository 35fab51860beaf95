"""The long fuzz run (issue 10, item 19): a million generated frames, both codecs,
several sockets at once, against one chatd process; the property test's
generators and checks (tests/fuzzkit.py), driven by seeded ``random.Random``s
instead of hypothesis.

Each socket worker sends cases (a few frames pipelined on an authenticated socket,
perhaps one that closes it last; a quarter of them pipelined behind the auth on a
new socket) and holds every answer and close to protocol/README.md; two workers
send first frames to new sockets. A control client authenticates and pings every
second on a fresh socket, and the server's log is read for tracebacks as it goes.

Reports: frames sent, replies, crashes (the server process died), tracebacks and
ERROR lines in its log, hangs (a frame the spec answers unanswered within
``--wait`` s on an open socket, or a control round trip not done in that time),
undocumented replies (error codes and close codes the spec does not list, shapes
it does not allow), other departures from the spec, and frames/s. Goal: zero of
each. Stops at ``--frames`` (1,000,000) or ``--max-seconds``, whichever first.

    nice -n 10 .venv/bin/python bench/fuzz.py                 # ~5-10 min
    nice -n 10 .venv/bin/python bench/fuzz.py --quick         # 20,000 frames
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib
from websockets.exceptions import WebSocketException

sys.path.insert(0, str(benchlib.ROOT / "tests"))
import fuzzkit as fk  # the generators live beside the tests that use them too

# what the report counts, from the harness' categories
HANGS = ("hang", "control")
UNDOCUMENTED = ("undocumented-error", "undocumented-close", "shape")
OTHER = ("internal", "1011", "wrong-answer", "wrong-close", "lost-answer", "no-close", "duplicate")


class Run:
    def __init__(self, args: argparse.Namespace, url: str, world: fk.World, proc: Any) -> None:
        self.args = args
        self.url = url
        self.world = world
        self.proc = proc
        self.tally = fk.Tally()
        self.cases = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.controls = 0
        self.crashes = 0
        self.log_offset = 0
        self.log_lines: list[str] = []
        self.deadline = time.monotonic() + args.max_seconds
        self.stop = False

    def done(self) -> bool:
        return self.stop or self.tally.sent >= self.args.frames or time.monotonic() > self.deadline

    async def cases_worker(self, i: int, codec: str) -> None:
        src = fk.RandomSource(random.Random(self.args.seed * 1000 + i))
        wait = self.args.wait
        conn: fk.Conn | None = None
        while not self.done():
            a = self.args
            case = fk.gen_case(src, self.world, codec, a.max_case, a.close_one_in, a.pipelined_one_in)
            try:
                if conn is None or not conn.open_ or case.pipelined:
                    if conn is not None:
                        await conn.close()
                    conn = await fk.open_for(self.url, case, self.world, self.tally, wait)
                    self.reconnects += 1
                auth = fk.auth_frame(case, self.world) if case.pipelined else None
                await fk.play(conn, case, self.world, wait, auth)
                self.cases += 1
                if not conn.open_ or case.pipelined:
                    await conn.close()
                    conn = None
            except (OSError, TimeoutError, AssertionError, WebSocketException) as exc:
                self.connect_failures += 1
                if self.connect_failures <= 5:
                    print(f"  worker {i}: {exc!r}", flush=True)
                conn = None
                await asyncio.sleep(0.2)
        if conn is not None:
            await conn.close()

    async def first_worker(self, i: int, codec: str) -> None:
        src = fk.RandomSource(random.Random(self.args.seed * 1000 + 500 + i))
        while not self.done():
            p = fk.gen_first(src, self.world, codec)
            try:
                await fk.run_first(self.url, codec, p, self.world, self.tally, self.args.wait)
                self.cases += 1
            except (OSError, TimeoutError, WebSocketException) as exc:
                self.connect_failures += 1
                if self.connect_failures <= 5:
                    print(f"  first-frame worker {i}: {exc!r}", flush=True)
                await asyncio.sleep(0.2)

    async def control_loop(self) -> None:
        while not self.done():
            await fk.control(self.url, self.world, self.tally, self.args.wait)
            self.controls += 1
            await asyncio.sleep(1.0)

    def read_log(self) -> None:
        self.log_offset, bad = fk.log_problems(Path(self.proc.log_path), self.log_offset)
        self.log_lines += bad

    async def monitor(self) -> None:
        started, last_sent, last_t = time.monotonic(), 0, time.monotonic()
        while not self.done():
            await asyncio.sleep(5.0)
            if self.proc.poll() is not None:
                self.crashes += 1
                print(f"!! chatd died (exit {self.proc.returncode}):\n{benchlib.log_tail(self.proc, 40)}", flush=True)
                self.stop = True
            self.read_log()
            now, sent = time.monotonic(), self.tally.sent
            probs = Counter(c for c, _ in self.tally.problems)
            print(
                f"  {now - started:6.0f} s  {sent:>9,} frames  {(sent - last_sent) / (now - last_t):7,.0f}/s  "
                f"{self.tally.replies:>9,} replies  problems {dict(probs) or 0}  log {len(self.log_lines)}",
                flush=True,
            )
            last_sent, last_t = sent, now


async def run(args: argparse.Namespace) -> dict[str, Any]:
    src = benchlib.chatd_source()
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from chatd.auth import make_token

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-fuzz-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    port = benchlib.free_port()
    proc = benchlib.start_chatd(port, str(tmp / "chatd.db"), [*fk.SERVE_ARGS, "--log-level", "warning"])
    await benchlib.wait_healthz(port, 30, proc)
    url = f"ws://{benchlib.HOST}:{port}/"
    world = await fk.make_world(url, lambda user, typ: make_token(user, typ, ttl=86400))
    r = Run(args, url, world, proc)
    codecs = fk.CODEC_NAMES
    workers = [r.cases_worker(i, codecs[i % 2]) for i in range(args.sockets)]
    workers += [r.first_worker(i, codecs[i % 2]) for i in range(2)]
    print(
        f"  fuzzing {url}: {args.frames:,} frames over {args.sockets} sockets + 2 first-frame workers, "
        f"seed {args.seed}, hang after {args.wait} s",
        flush=True,
    )
    started = time.monotonic()
    cpu0 = benchlib.cpu_times(proc.pid)
    gen0 = resource.getrusage(resource.RUSAGE_SELF)
    mon = asyncio.get_running_loop().create_task(r.monitor())
    await asyncio.gather(*workers, r.control_loop())
    elapsed = time.monotonic() - started
    cpu1 = benchlib.cpu_times(proc.pid)
    gen1 = resource.getrusage(resource.RUSAGE_SELF)
    mon.cancel()
    await asyncio.sleep(1.0)  # the last lines reach the log
    if proc.poll() is not None:
        r.crashes = max(r.crashes, 1)
    r.read_log()
    benchlib.stop_server(proc)
    shutil.rmtree(tmp, ignore_errors=True)
    t = r.tally
    probs = Counter(c for c, _ in t.problems)
    examples: dict[str, list[str]] = {}
    for cat, line in t.problems:
        examples.setdefault(cat, [])
        if len(examples[cat]) < 5:
            examples[cat].append(line[:600])
    return {
        "frames": t.sent,
        "replies": t.replies,
        "pushes": t.pushes,
        "cases": r.cases,
        "sockets_opened": r.reconnects,
        "controls": r.controls,
        "seconds": round(elapsed, 1),
        "frames_per_s": round(t.sent / elapsed, 1) if elapsed else 0.0,
        "server_cpu_s": round(sum(cpu1) - sum(cpu0), 1),
        "generator_cpu_s": round(gen1.ru_utime + gen1.ru_stime - gen0.ru_utime - gen0.ru_stime, 1),
        "crashes": r.crashes,
        "tracebacks": sum("Traceback" in ln for ln in r.log_lines),
        "log_errors": len(r.log_lines),
        "hangs": sum(probs[c] for c in HANGS),
        "undocumented": sum(probs[c] for c in UNDOCUMENTED),
        "other_departures": sum(probs[c] for c in OTHER),
        "connect_failures": r.connect_failures,
        "problems": dict(probs),
        "examples": examples,
        "log_lines": r.log_lines[:20],
        "errors": dict(t.errors.most_common()),
        "closes": {str(k): v for k, v in sorted(t.closes.items())},
        "op_errors": {f"{op} {code}": n for (op, code), n in sorted(t.op_errors.items())},
        "args": vars(args),
    }


def report(res: dict[str, Any]) -> str:
    rows = [
        ("frames sent", res["frames"]),
        ("replies", res["replies"]),
        ("pushes", res["pushes"]),
        ("cases (sockets' bursts and first frames)", res["cases"]),
        ("sockets opened by the case workers", res["sockets_opened"]),
        ("control round trips", res["controls"]),
        ("seconds", res["seconds"]),
        ("frames/s", res["frames_per_s"]),
        ("server CPU s (core 0)", res["server_cpu_s"]),
        ("generator CPU s (core 1)", res["generator_cpu_s"]),
        ("**crashes** (server process died)", res["crashes"]),
        ("**tracebacks** in the server log", res["tracebacks"]),
        ("**ERROR and Traceback lines** in the server log", res["log_errors"]),
        ("**hangs** (unanswered in time, control round trip failed)", res["hangs"]),
        ("**undocumented** (error or close code not in the spec, bad shape)", res["undocumented"]),
        (
            "**other departures** (internal, 1011, wrong code or close, lost or duplicate answer)",
            res["other_departures"],
        ),
        ("connect failures", res["connect_failures"]),
    ]
    lines = ["| figure | value |", "|---|---|", *(f"| {k} | {benchlib.fmt(v)} |" for k, v in rows)]
    lines += ["", "Close codes seen: " + ", ".join(f"{k}: {benchlib.fmt(v)}" for k, v in res["closes"].items())]
    lines += ["", "Error codes seen: " + ", ".join(f"{k}: {benchlib.fmt(v)}" for k, v in res["errors"].items())]
    spec = fk.SPEC
    general = {"bad_request", "unknown_op", "rate_limited", "unavailable", "internal"}
    unlisted = []
    for key, n in res["op_errors"].items():
        op, code = key.split(" ")
        if op in spec.op_errors and code != "ok" and code not in general and code not in spec.op_errors[op]:
            unlisted.append(f"`{op}` {code} ({n:,})")
    if unlisted:
        lines += ["", "Documented codes that §5 does not name in the op's row: " + ", ".join(unlisted)]
    for cat, ex in res["examples"].items():
        lines += ["", f"{cat} ({res['problems'][cat]:,}), first examples:", *(f"    {e}" for e in ex)]
    for ln in res["log_lines"]:
        lines.append(f"    log: {ln}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to send (1,000,000)")
    ap.add_argument("--sockets", type=int, default=12, help="case workers, half per codec (12)")
    ap.add_argument("--max-case", type=int, default=8, help="answerable frames per case at most (8)")
    ap.add_argument("--close-one-in", type=int, default=10, help="one case in N ends with a closing frame (10)")
    ap.add_argument("--pipelined-one-in", type=int, default=10, help="one case in N goes behind the auth (10)")
    ap.add_argument("--wait", type=float, default=10.0, help="s before an unanswered frame is a hang (10)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generators (1)")
    ap.add_argument("--max-seconds", type=int, default=2400, help="stop by then in any case (2400)")
    ap.add_argument("--quick", action="store_true", help="20,000 frames")
    ap.add_argument("--no-save", action="store_true", help="print only: no results/<date>.md, results.jsonl")
    args = ap.parse_args()
    if args.quick:
        args.frames = min(args.frames, 20_000)
    res = benchlib.run_pinned(run(args), watchdog=args.max_seconds + 300, fds=4096)
    text = report(res)
    print(text, flush=True)
    if not args.no_save:
        benchlib.save_result(res, f"fuzz {res['frames']:,} frames", text, chatd=True)
    bad = res["crashes"] + res["tracebacks"] + res["log_errors"] + res["hangs"] + res["undocumented"]
    sys.exit(1 if bad + res["other_departures"] else 0)


if __name__ == "__main__":
    main()
