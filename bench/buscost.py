"""What one envelope costs chatd's Redis bus, on each side, without the chat around it.

Two processes on core 0 with a redis-server (also on core 0), each running chatd's
own ``RedisBus`` (``chatd/bus/redis.py`` on ``chatd/bus/resp.py``): one publishes
envelopes shaped like a circle message push (~330 bytes, key ``c:c:<n>``), one
message per event-loop turn as chatd does at these rates, and the other is
subscribed to their channel and counts them in its ``bus_message`` handler. This
generator (core 1) only measures: CPU µs per envelope of the publisher, of the
subscriber and of Redis (/proc/<pid>/stat), over a fixed window per rate.

The difference between these figures and chatd's 2-process fan-out cost shows what
the bus itself costs versus the fan-out work around it.

    .venv/bin/python bench/buscost.py           # 200, 500, 2,000 envelopes/s, ~45 s
    .venv/bin/python bench/buscost.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

import benchlib

SELF = os.path.abspath(__file__)


def _bus_class() -> Any:
    src = benchlib.chatd_source()
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from chatd.bus.redis import RedisBus

    return RedisBus


def _payload(n: int) -> bytes:
    import msgpack

    text = "x" * 120
    d = {
        "conv": "c:1",
        "seq": n,
        "pos": 100_000 + n,
        "ts": int(time.time() * 1000),
        "from": "f0_0",
        "author": {"name": "f0_0", "type": "owner", "badges": [], "roles": []},
        "kind": "text",
        "text": text,
        "cid": f"b{n}",
    }
    return b"\x00" + n.to_bytes(8, "big") + msgpack.packb({"push": "msg", "d": d})


async def _child(role: str, url: str, keys: int) -> None:
    RedisBus = _bus_class()
    bus = RedisBus(url)
    got = [0]

    class Handler:
        def bus_message(self, key: str, payload: bytes) -> None:
            got[0] += 1

        def bus_reset(self) -> None:
            pass

    bus.attach(Handler())
    if role == "sub":
        for k in range(keys):
            bus.interest(f"c:c:{k}", 1)
    await bus.start()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print("ready", flush=True)
    if role == "sub":
        # report the count on demand (SIGUSR1) so the parent can take windows
        loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"count {got[0]}", flush=True))
        await stop
    else:
        rate = 0.0
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        sent = 0
        t0 = time.monotonic()
        payloads = [_payload(n) for n in range(64)]

        async def commands() -> None:
            nonlocal rate, sent, t0
            while True:
                line = await reader.readline()
                if not line:
                    stop.done() or stop.set_result(None)
                    return
                rate, sent, t0 = float(line), 0, time.monotonic()
                print(f"rate {rate}", flush=True)

        task = loop.create_task(commands())
        while not stop.done():
            if not rate:
                await asyncio.sleep(0.05)
                continue
            # one envelope per loop turn and one timer per envelope, as chatd at these rates
            # (a message arrives, commits, is published); no busy pacing loop to pay for
            wait = t0 + (sent + 1) / rate - time.monotonic()
            await asyncio.sleep(max(wait, 0))
            bus.publish(f"c:c:{sent % keys}", payloads[sent % 64])
            sent += 1
        task.cancel()
    await bus.stop()


async def _expect(stream: asyncio.StreamReader, prefix: bytes, within: float) -> None:
    async with asyncio.timeout(within):
        while not (line := await stream.readline()).startswith(prefix):
            if not line:
                raise RuntimeError("publisher exited")


async def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    redis, rport = benchlib.start_redis(core=0)
    url = f"redis://{benchlib.HOST}:{rport}/0"
    env = {"BENCH_CHATD_REV": os.environ.get("BENCH_CHATD_REV", "")}
    me = [sys.executable, SELF]
    sub = benchlib.start_server(
        [*me, "--role", "sub", "--url", url, "--keys", str(args.keys)], core=0, name="bus-sub", env=env
    )
    pub_cmd = ["taskset", "-c", "0", *me, "--role", "pub", "--url", url, "--keys", str(args.keys)]
    pub = await asyncio.create_subprocess_exec(
        *pub_cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
        env={**os.environ, **env},
    )  # fmt: skip
    rows = []
    try:
        assert pub.stdout is not None and pub.stdin is not None
        await _expect(pub.stdout, b"ready", 30)
        await asyncio.sleep(1.0)  # the subscriber is up too (its log says so)
        for rate in args.rates:
            pub.stdin.write(f"{rate}\n".encode())
            await pub.stdin.drain()
            await _expect(pub.stdout, b"rate", 5)
            await asyncio.sleep(args.warmup)
            pids = {"publisher": pub.pid, "subscriber": sub.pid, "redis": redis.pid}
            c0 = {k: sum(benchlib.cpu_times(p)) for k, p in pids.items()}
            cs0 = benchlib.redis_cmdstats(rport).get("publish", {})
            w0 = time.monotonic()
            await asyncio.sleep(args.window)
            c1 = {k: sum(benchlib.cpu_times(p)) for k, p in pids.items()}
            cs1 = benchlib.redis_cmdstats(rport).get("publish", {})
            el = time.monotonic() - w0
            n = cs1.get("calls", 0) - cs0.get("calls", 0)
            row = {
                "rate": int(rate) if float(rate).is_integer() else rate,
                "published_per_s": round(n / el),
                **{f"{k}_us": round(1e6 * (c1[k] - c0[k]) / max(n, 1), 1) for k in pids},
                **{f"{k}_pct": round(100 * (c1[k] - c0[k]) / el, 1) for k in pids},
                "redis_publish_usec": round((cs1.get("usec", 0) - cs0.get("usec", 0)) / max(n, 1), 2),
            }
            rows.append(row)
            print(
                f"  {rate:>6,.0f}/s: {row['published_per_s']:,} PUBLISH/s; CPU per envelope: publisher "
                f"{row['publisher_us']} µs, subscriber {row['subscriber_us']} µs, redis {row['redis_us']} µs "
                f"(in-command {row['redis_publish_usec']} µs)",
                flush=True,
            )
        pub.stdin.close()
        await asyncio.wait_for(pub.wait(), 10)
    finally:
        if pub.returncode is None:
            pub.kill()
            await pub.wait()
        benchlib.stop_server(sub)
        benchlib.stop_server(redis)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=["pub", "sub"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--keys", type=int, default=50, help="conversations (keys) the envelopes go to (50)")
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], help="envelopes/s (200,500,2000)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--window", type=float)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.role:
        import uvloop

        uvloop.run(_child(args.role, args.url, args.keys))
        return
    args.rates = args.rates or [200.0, 500.0, 2000.0]
    args.window = args.window or (3.0 if args.quick else 10.0)
    rows = benchlib.run_pinned(_measure(args), watchdog=180)
    table = benchlib.md_table(
        rows,
        [
            ("envelopes/s", "rate"),
            ("PUBLISH/s", "published_per_s"),
            ("publisher µs/env", "publisher_us"),
            ("subscriber µs/env", "subscriber_us"),
            ("redis µs/env", "redis_us"),
            ("redis in-command µs", "redis_publish_usec"),
            ("publisher core %", "publisher_pct"),
            ("subscriber core %", "subscriber_pct"),
            ("redis core %", "redis_pct"),
        ],
    )
    setup = (
        f"chatd's RedisBus, one publisher and one subscriber process + redis-server on core 0, "
        f"~330-byte envelopes over {args.keys} keys, one per loop turn (chatd's RESP client); window {args.window} s"
    )
    text = f"{setup}\n\n{table}\n"
    print("\n" + text)
    benchlib.save_result(
        {"bench": "buscost", "setup": setup, "rows": rows}, "Redis bus cost (bench/buscost.py)", text, chatd=True
    )


if __name__ == "__main__":
    main()
