"""Lean WebSocket load generator: raw asyncio Protocol clients (uvloop).

Written for receiving 50,000+ frames/s on one core in Python:

* the HTTP Upgrade handshake is done by hand;
* server frames (unmasked, RFC 6455 §5.1) are parsed incrementally in
  ``data_received`` with plain index arithmetic on ``bytes``;
* a delivered chat message is recognised without decoding it: the sender puts
  ``@T`` + 19 digits of ``time.perf_counter_ns()`` in the message text, the
  receiver ``bytes.find``s the marker and subtracts (same machine, same clock);
* the receive time is read once per ``data_received`` call, not per frame;
* client frames are masked (RFC 6455 §5.3) with a fixed non-zero key.

Everything else (replies, system pushes) goes to a per-connection callback,
decoded with orjson (or msgpack).

Run standalone, ``python bench/wsload.py`` measures the generator's own ceiling:
a raw "blaster" subprocess on core 0 writes pre-built frames as fast as the
sockets take them, and the generator on core 1 counts frames and latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import orjson

MARK = b"@T"
MARK_DIGITS = 19
MASK = b"\x5a\xa5\x3c\xc3"
_MASK_CACHE: dict[int, int] = {}
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_KEY = base64.b64encode(b"chatd-bench-key!")  # any 16 bytes
WS_ACCEPT = base64.b64encode(hashlib.sha1(WS_KEY + WS_GUID).digest())

now_ns = time.perf_counter_ns
SELF = os.path.abspath(__file__)


def stamp(t_ns: int | None = None) -> str:
    """The latency marker to embed in a message text."""
    return f"@T{now_ns() if t_ns is None else t_ns:019d}"


def make_text(size: int, t_ns: int | None = None) -> str:
    """A message text of exactly ``size`` ASCII bytes starting with a marker."""
    s = stamp(t_ns) + " "
    return s + "x" * (size - len(s)) if size > len(s) else s


def mask_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    if not n:
        return head + MASK
    m = _MASK_CACHE.get(n)
    if m is None:
        m = int.from_bytes((MASK * (n // 4 + 1))[:n], "big")
        if len(_MASK_CACHE) < 4096:
            _MASK_CACHE[n] = m
    return head + MASK + (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, unmasked (server-side) frame; used by the self-test blaster."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


class Stats:
    """Shared by all connections of one generator."""

    def __init__(self) -> None:
        self.deliveries = 0  # frames carrying a marker, in the current window
        self.all_deliveries = 0  # ... never reset
        self.frames = 0  # every data frame, in the current window
        self.bytes = 0  # payload bytes of the marker frames, in the current window
        self.recording = False
        self.lat: list[int] = []  # ns, only while recording
        self.closes: Counter[int] = Counter()  # close code -> count
        self.lost = 0  # connections lost without a close frame
        self.errors: Counter[str] = Counter()  # error replies by code (chatd)
        self.replies = 0  # non-error replies (chatd acks included)
        self.dups = 0  # chatd acks with "dup": true

    def reset_window(self) -> None:
        self.deliveries = self.frames = self.bytes = 0
        self.lat = []


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class WSConn(asyncio.Protocol):
    """One WebSocket client connection."""

    def __init__(
        self,
        stats: Stats,
        host: str,
        port: int,
        path: str = "/",
        subprotocols: tuple[str, ...] = (),
        on_other: Callable[[WSConn, bytes, int], None] | None = None,
    ) -> None:
        self.stats = stats
        self._upgrade = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WS_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}\r\n" if subprotocols else "")
            + "\r\n"
        ).encode()
        self.on_other = on_other or WSConn.dispatch_reply
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[WSConn] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.subprotocol: str | None = None
        self.buf = b""
        self.closed = False
        self.close_code: int | None = None
        self.pending: dict[Any, asyncio.Future[Any]] = {}
        self.next_id = itertools.count(1).__next__
        self.loads: Callable[[bytes], Any] = orjson.loads
        self.dumps: Callable[[Any], bytes] = orjson.dumps
        self.text = True
        self.user = ""  # free for the caller
        self.ctx: Any = None  # free for the caller

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self._upgrade)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.stats.lost += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"lost during handshake: {exc}"))
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection closed ({self.close_code})"))
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        t = now_ns()
        if self.upgraded:
            buf = self.buf + data if self.buf else data
        else:
            buf = self.buf + data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self._handshake(buf[:end])
            if not self.upgraded:
                return
            buf = buf[end + 4 :]
        n = len(buf)
        i = 0
        st = self.stats
        rec = st.recording
        lat = st.lat
        deliveries = frames = nbytes = 0
        find = buf.find
        while n - i >= 2:
            b0 = buf[i]
            ln = buf[i + 1] & 0x7F
            if ln < 126:
                s = i + 2
            elif ln == 126:
                if n - i < 4:
                    break
                ln = (buf[i + 2] << 8) | buf[i + 3]
                s = i + 4
            else:
                if n - i < 10:
                    break
                ln = int.from_bytes(buf[i + 2 : i + 10], "big")
                s = i + 10
            e = s + ln
            if e > n:
                break
            i = e
            op = b0 & 0x0F
            if op == 1 or op == 2:
                frames += 1
                j = find(MARK, s, e)
                if j >= 0:
                    deliveries += 1
                    nbytes += ln
                    if rec:
                        lat.append(t - int(buf[j + 2 : j + 2 + MARK_DIGITS]))
                else:
                    self.on_other(self, buf[s:e], t)
            else:
                self._control(op, buf[s:e])
        self.buf = buf[i:] if i < n else b""
        st.deliveries += deliveries
        st.all_deliveries += deliveries
        st.frames += frames
        st.bytes += nbytes

    # -- internals ---------------------------------------------------------
    def _handshake(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 101"):
            self._fail(ConnectionError(f"handshake refused: {lines[0]!r}"))
            return
        accept = None
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"sec-websocket-accept":
                accept = v.strip()
            elif k == b"sec-websocket-protocol":
                self.subprotocol = v.strip().decode()
        if accept != WS_ACCEPT:
            self._fail(ConnectionError("bad Sec-WebSocket-Accept"))
            return
        if self.subprotocol and self.subprotocol.endswith("msgpack"):
            self.loads = msgpack.unpackb
            self.dumps = msgpack.packb
            self.text = False
        self.upgraded = True
        self.buf = b""
        if self.opened.done():  # the caller gave up waiting (timeout)
            self.abort()
            return
        self.opened.set_result(self)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.closed = True
        if self.transport:
            self.transport.abort()

    def _control(self, op: int, payload: bytes) -> None:
        if op == 9:  # ping -> pong
            self.write_frame(payload, 0xA)
        elif op == 8:  # close
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_code = code
            if not self.closed:
                self.closed = True
                self.stats.closes[code] += 1
                self.write_frame(payload[:2], 0x8)
                assert self.transport is not None
                self.transport.close()

    # -- API ---------------------------------------------------------------
    def write_frame(self, payload: bytes, opcode: int | None = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if opcode is None:
                opcode = 1 if self.text else 2
            self.transport.write(mask_frame(payload, opcode))

    def send_obj(self, obj: Any) -> None:
        self.write_frame(self.dumps(obj))

    def request(self, op: str, d: dict[str, Any] | None = None) -> asyncio.Future[Any]:
        """Send ``{"id","op","d"}``; the future gets the decoded reply frame."""
        rid = self.next_id()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        self.send_obj({"id": rid, "op": op, "d": d or {}})
        return fut

    @staticmethod
    def dispatch_reply(conn: WSConn, payload: bytes, t: int) -> None:
        """Default handler for non-delivery frames: resolve request futures."""
        obj = conn.loads(payload)
        if isinstance(obj, dict) and "id" in obj:
            if "error" in obj:
                conn.stats.errors[str(obj["error"].get("code"))] += 1
            else:
                conn.stats.replies += 1
                d = obj.get("d")
                if isinstance(d, dict) and d.get("dup") is True:
                    conn.stats.dups += 1
            fut = conn.pending.pop(obj["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(obj)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.write_frame(code.to_bytes(2, "big"), 0x8)
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


async def connect(
    stats: Stats,
    host: str,
    port: int,
    path: str = "/",
    subprotocols: tuple[str, ...] = (),
    on_other: Callable[[WSConn, bytes, int], None] | None = None,
    within: float = 10.0,
) -> WSConn:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: WSConn(stats, host, port, path, subprotocols, on_other), host, port),
        within,
    )
    try:
        return await asyncio.wait_for(proto.opened, within)
    except BaseException:
        proto.abort()
        raise


async def connect_many(
    n: int,
    make: Callable[[int], Any],
    concurrency: int = 200,
) -> list[Any]:
    """Run ``make(i)`` for i in range(n), at most ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)
    out: list[Any] = [None] * n

    async def one(i: int) -> None:
        async with sem:
            out[i] = await make(i)

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


def percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return float(sorted_vals[k])


def lat_summary_ms(lat: list[int]) -> dict[str, float]:
    s = sorted(lat)
    return {
        "p50_ms": round(percentile(s, 0.50) / 1e6, 3),
        "p99_ms": round(percentile(s, 0.99) / 1e6, 3),
        "max_ms": round((s[-1] if s else float("nan")) / 1e6, 3),
        "n": len(s),
    }


# -- self-test: how many frames/s can this generator take on one core? -------


async def _blaster(port: int, size: int, rate: int, expect: int) -> None:
    """Raw server: 101 on any upgrade, then frames to every connection.

    ``rate`` 0: as fast as the sockets take them, 64 frames per write (the
    generator's bulk ceiling). ``rate`` > 0: that many frames/s in total, one
    frame per write, round-robin over the connections (like a fan-out server
    whose recipients each get a frame now and then).
    """
    conns: list[Any] = []

    class Blast(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.Transport = transport  # type: ignore[assignment]
            self.paused = False
            self.buf = b""
            self.on = False

        def data_received(self, data: bytes) -> None:
            if self.on:
                return
            self.buf += data
            if b"\r\n\r\n" not in self.buf:
                return
            key = b""
            for line in self.buf.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            acc = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            self.t.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n"
            )
            self.on = True
            conns.append(self)
            if not rate:
                asyncio.get_running_loop().call_soon(self.pump)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            if not rate:
                self.pump()

        def pump(self) -> None:
            while not self.paused and not self.t.is_closing():
                self.t.write(server_frame(make_text(size).encode()) * 64)

        def connection_lost(self, exc: Exception | None) -> None:
            self.paused = True
            if self in conns:
                conns.remove(self)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Blast, "127.0.0.1", port, backlog=4096)
    async with server:
        if not rate:
            await asyncio.sleep(3600)
        for _ in range(600):  # pace only once everyone is connected: no starved accepts
            if len(conns) >= expect:
                break
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        sent = k = 0
        while True:
            await asyncio.sleep(0.001)
            due = int((time.monotonic() - t0) * rate) - sent
            if not conns:
                t0, sent = time.monotonic(), 0
                continue
            frame = server_frame(make_text(size).encode())
            for _ in range(due):
                k = (k + 1) % len(conns)
                c = conns[k]
                if not c.paused:
                    c.t.write(frame)
            sent += due


async def selftest(conns: int, seconds: float, size: int, rate: int) -> dict[str, Any]:
    import benchlib

    port = benchlib.free_port()
    proc = benchlib.start_server(
        [sys.executable, SELF, "--blaster", str(port), "--size", str(size), "--rate", str(rate), "--conns", str(conns)],
        core=0,
        name="blaster",
    )
    try:
        await benchlib.wait_tcp("127.0.0.1", port, 10)
        st = Stats()
        cs = await connect_many(conns, lambda i: connect(st, "127.0.0.1", port))
        await benchlib.wait_quiet(30, server_pid=proc.pid)
        st.reset_window()
        st.recording = True
        c0, t0 = cpu_seconds(), time.monotonic()
        others = benchlib.OtherLoad(proc.pid)
        await asyncio.sleep(seconds)
        st.recording = False
        c1, t1 = cpu_seconds(), time.monotonic()
        other_pct, _ = others.pct()
        frames = st.deliveries
        for c in cs:
            c.abort()
        el = t1 - t0
        res = {
            "bench": "wsload-selftest",
            "conns": conns,
            "frame_bytes": size,
            "blaster_rate": rate or "flood (64 frames per write)",
            "frames_per_s": round(frames / el),
            "generator_cpu_pct": round(100 * (c1 - c0) / el, 1),
            "generator_cpu_us_per_frame": round(1e6 * (c1 - c0) / max(frames, 1), 2),
            "other_pct": other_pct,
            **{f"blaster_to_gen_{k}": v for k, v in lat_summary_ms(st.lat).items()},
        }
        return res
    finally:
        benchlib.stop_server(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blaster", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=290, help="frame payload bytes (default 290)")
    ap.add_argument("--conns", type=int, default=None, help="connections (5000; quick 1000)")
    ap.add_argument(
        "--rate",
        type=int,
        action="append",
        help="frames/s the blaster sends, one frame per write; 0 = flood with bulk "
        "writes (default: 0, 50000, 100000 in turn)",
    )
    ap.add_argument("--seconds", type=float, default=None, help="window per rate (5; quick 2)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import uvloop

    if args.blaster:
        uvloop.run(_blaster(args.blaster, args.size, (args.rate or [0])[0], args.conns or 1))
        return
    import benchlib

    benchlib.install_watchdog(170)
    benchlib.raise_nofile()
    benchlib.pin_self(1)
    conns = args.conns or (1000 if args.quick else 5000)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    rows = []
    for rate in args.rate or [0, 50_000, 100_000]:
        n = conns if rate else min(conns, 200)  # a flood starves the accept loop
        res = uvloop.run(selftest(n, seconds, args.size, rate))
        print(
            f"wsload self-test, blaster {rate or 'flood'}: {res['frames_per_s']:,} frames/s "
            f"received on one core ({res['generator_cpu_pct']}% CPU, "
            f"{res['generator_cpu_us_per_frame']} µs/frame, {n} conns, "
            f"{args.size}-byte frames)",
            flush=True,
        )
        rows.append(res)
    table = benchlib.md_table(
        rows,
        [
            ("blaster frames/s", "blaster_rate"),
            ("conns", "conns"),
            ("received frames/s", "frames_per_s"),
            ("generator CPU %", "generator_cpu_pct"),
            ("generator µs/frame", "generator_cpu_us_per_frame"),
            ("others %", "other_pct"),
            ("p50 ms", "blaster_to_gen_p50_ms"),
            ("p99 ms", "blaster_to_gen_p99_ms"),
        ],
    )
    print(table)
    benchlib.save_result({"bench": "wsload-selftest", "runs": rows}, "wsload self-test", table)


if __name__ == "__main__":
    main()
