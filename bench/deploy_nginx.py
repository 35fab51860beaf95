"""The deployment docs, run for real: docs/deployment.md's nginx block in front of a chatd.

Takes the block between ``# chatd-nginx:begin`` and ``# chatd-nginx:end`` in
docs/deployment.md and rewrites only ports, listen/allow addresses, log paths and
certificate paths to test values (a CA and a server certificate made here with
``cryptography``). Starts two nginx (each with its own prefix, pid and logs, not a
daemon, on free loopback ports): the block as written, and a control copy without its
``proxy_read_timeout``/``proxy_send_timeout`` lines (nginx's 60 s defaults). Starts a
chatd from a TOML file like the doc's, with its token secret from the environment as the
systemd unit gives it, keepalive pings off so that an idle socket is really idle. Then,
through nginx over wss, it checks (PASS/FAIL each; SKIP for what chatd does not do):

- ``nginx -t`` accepts both configurations; port 80 redirects to https;
- the public side answers 404 for /healthz, /metrics and encodings of them; the
  private side answers /healthz (JSON with its fields) and /metrics, and 403 to an
  address outside its allow list;
- both subprotocols are negotiated through nginx; a client offering neither is closed
  4203; a token signed with the development secret is refused 4101;
- a JSON client (alice, from source address 127.0.0.2) opens a DM and sends; the
  reference client (``chatd_client``, msgpack, certificate verified through
  SSL_CERT_FILE) receives it as bob;
- a notification hook from the config (as a deployment plugs in its push bridge) is
  called for bob once he is offline;
- every metric the doc's "What to watch" section names exists in a real scrape;
- ``systemd-analyze verify`` accepts the doc's units (when it is installed);
- the doc's backup script copies the store while chatd serves;
- a socket idle ``--idle`` s (default 75, more than nginx's default 60 s read timeout)
  is still open through the block, and the control closes its idle socket (so the
  timeout lines are what keeps it);
- nginx logged the client's address; chatd logs the remote address it sees (nginx's);
- a client that stops reading is still closed 4001 by chatd's outbound cap, with nginx
  and the kernel's socket buffers in between (chatd's rate limits are lifted for it);
- SIGTERM drains: the socket through nginx gets 4000, chatd exits 0, nginx then says 502;
- the doc's restore (move the files, copy the backup, ``chatd new-epoch``) serves the
  backup's messages under a new epoch.

Exits 1 when a check fails. Stops every process it started, bounded by a watchdog.

    .venv/bin/python bench/deploy_nginx.py                        # ~85 s
    .venv/bin/python bench/deploy_nginx.py --idle 65 --save bench/results/2026-12-02-deploy.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib.servers import chatd_argv
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

DOC = benchlib.ROOT / "docs" / "deployment.md"
JSON_SUB = "chatd.v1.json"
MSGPACK_SUB = "chatd.v1.msgpack"
HOOK = """import json, os


class Record:
    name = "deploy-check"

    async def __call__(self, note):
        with open(os.environ["DEPLOY_NOTES"], "a") as f:
            f.write(json.dumps({"key": note.key, "user": note.user, "conv": note.conv, "preview": note.preview}) + "\\n")
"""
CLIENT_ADDR = "127.0.0.2"  # alice's source address: not nginx's, so the logs can tell them apart


class Checks:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, ok: bool | None, detail: str = "") -> bool:
        verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        self.rows.append((verdict, name, detail))
        print(f"{verdict}  {name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(ok)

    @property
    def failed(self) -> int:
        return sum(1 for v, _, _ in self.rows if v == "FAIL")


# -- the doc ---------------------------------------------------------------------------


def marked(text: str, name: str) -> str:
    """The lines between ``# name:begin`` and ``# name:end``."""
    m = re.search(rf"^[ \t]*# {re.escape(name)}:begin[^\n]*\n(.*?)^[ \t]*# {re.escape(name)}:end", text, re.S | re.M)
    if m is None:
        raise SystemExit(f"no block between '# {name}:begin' and '# {name}:end'")
    return m.group(1)


def metric_names(text: str) -> set[str]:
    """Every metric the doc's "What to watch" section names."""
    section = text[text.index("## What to watch") :]
    return set(re.findall(r"\b((?:chatd|process)_[a-z_]+[a-z])\b", section))


def labelled(scrape: str, series: str) -> bool:
    """Whether ``name{label="value"}`` is among the scraped lines, whatever other labels they have."""
    name, _, label = series.rstrip("}").partition("{")
    return re.search(rf'^{re.escape(name)}\{{(?:[^}}]*,)?{re.escape(label)}[,}}]', scrape, re.M) is not None


def sub(pattern: str, repl: str, text: str, count_min: int = 1) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.M)
    if n < count_min:
        raise SystemExit(f"the nginx block changed: nothing matches {pattern!r}; update bench/deploy_nginx.py")
    return new


def rewrite(block: str, *, chatd: int, http: int, https: int, admin: int, certs: Path, logs: Path) -> str:
    """Test ports, addresses and paths; nothing else of the block changes."""
    out = sub(r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{chatd};", block)
    out = sub(r"listen \d+\.\d+\.\d+\.\d+:\d+;", f"listen 127.0.0.1:{admin};", out)  # the private side
    out = sub(r"^(\s*)listen \[::\]:\d+( ssl)?;\n", "", out, 2)  # no IPv6 in the test
    out = sub(r"listen 80;", f"listen 127.0.0.1:{http};", out)
    out = sub(r"listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;", out)
    out = sub(r"allow 10\.0\.0\.0/8;", "allow 127.0.0.1;", out)
    out = sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {certs / 'fullchain.pem'};", out)
    out = sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {certs / 'privkey.pem'};", out)
    return sub(r"/var/log/nginx/", f"{logs}/", out, 2)


def nginx_conf(block: str, tmp: Path) -> str:
    paths = "\n".join(
        f"    {kind}_temp_path {tmp}/temp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/logs/error.log warn;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n{paths}\n{block}\n}}\n"
    )


# -- certificates ----------------------------------------------------------------------


def make_certs(tmp: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it; returns the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("deploy-check CA", ca_key, "deploy-check CA", ca_key, True)
    leaf = cert("127.0.0.1", key, "deploy-check CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (tmp / "privkey.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp / "ca.pem"


# -- processes -------------------------------------------------------------------------


def nginx_bin() -> str:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if exe is None:
        raise SystemExit("nginx is not installed (Debian: apt-get install nginx-light)")
    return exe


def nginx_version() -> str:
    out = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().split("/", 1)[-1]


def nginx_argv(tmp: Path) -> list[str]:
    return [nginx_bin(), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "logs" / "error.log")]


def nginx_test(tmp: Path) -> tuple[bool, str]:
    out = subprocess.run([*nginx_argv(tmp), "-t", "-q"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0, (out.stderr or out.stdout).strip()


def chatd_cmd(*args: str, env: dict[str, str] | None = None) -> str:
    """Run a ``chatd`` subcommand (token, new-epoch); its last line of output."""
    out = subprocess.run(
        [*chatd_argv(), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    if out.returncode != 0:
        raise RuntimeError(f"chatd {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def chatd_log(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    lines = []
    for line in Path(getattr(proc, "log_path", "/dev/null")).read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            lines.append(rec)
    return lines


def systemd_verify(doc: str, tmp: Path) -> tuple[bool | None, str]:
    """``systemd-analyze verify`` of the doc's units: chatd.service (ExecStart pointed at this
    venv's chatd, since verify wants the program to exist), chatd-backup.service and .timer."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return None, "systemd-analyze is not installed: the units were not verified by tooling"
    units = tmp / "units"
    units.mkdir()
    (units / "chatd.service").write_text(marked(doc, "chatd-unit").replace("/opt/chatd/venv/bin/chatd", str(benchlib.VENV_BIN / "chatd")))
    start = doc.index("# /etc/systemd/system/chatd-backup.service")
    service, timer = doc[start : doc.index("```", start)].split("# /etc/systemd/system/chatd-backup.timer")
    script = units / "chatd-backup"
    script.write_text("#!/bin/sh\n" + marked(doc, "chatd-backup"))
    script.chmod(0o755)
    (units / "chatd-backup.service").write_text(service.replace("/usr/local/bin/chatd-backup", str(script)))
    (units / "chatd-backup.timer").write_text(timer)
    names = ["chatd.service", "chatd-backup.service", "chatd-backup.timer"]
    out = subprocess.run([exe, "verify", *names], capture_output=True, text=True, timeout=60, cwd=units)
    said = (out.stdout + out.stderr).strip()
    return out.returncode == 0 and not said, said or f"{', '.join(names)}: no warnings"


def https_get(port: int, path: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def http_get(port: int, path: str, source: str | None = None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace"), r.getheader("Location") or ""
    finally:
        conn.close()


# -- a JSON client on plain websockets ---------------------------------------------------


class Raw:
    """One socket, one request at a time; pushes are kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.pushes: list[dict[str, Any]] = []
        self.closed_at: float | None = None

    @classmethod
    async def open(
        cls, url: str, ctx: ssl.SSLContext, subs: tuple[str, ...] = (JSON_SUB,), source: str | None = None,
        max_queue: int = 16,
    ) -> Raw:
        ws = await connect(
            url,
            ssl=ctx,
            subprotocols=[Subprotocol(s) for s in subs],
            compression=None,
            ping_interval=None,  # an idle socket stays idle: no keepalive from either side
            proxy=None,
            open_timeout=10,
            max_queue=max_queue,  # 1: a client that stops reading stops reading its socket at once
            **({"local_addr": (source, 0)} if source else {}),
        )
        return cls(ws)

    async def request(self, op: str, **d: Any) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        await self.ws.send(json.dumps({"id": rid, "op": op, "d": d}))
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await self.ws.recv())
                if frame.get("id") == rid:
                    return dict(frame)
                if "push" in frame:
                    self.pushes.append(frame)

    async def auth(self, token: str) -> dict[str, Any]:
        return await self.request("auth", token=token)

    async def watch_close(self) -> None:
        await self.ws.wait_closed()
        self.closed_at = time.monotonic()


async def closed_code(ws: ClientConnection, within: float = 10) -> int | None:
    try:
        async with asyncio.timeout(within):
            await ws.wait_closed()
    except TimeoutError:
        return None
    return ws.close_code


async def slow_consumer(
    args: argparse.Namespace, ck: Checks, facts: dict[str, Any], wss: str, ctx: ssl.SSLContext,
    tokens: dict[str, str], admin: int,
) -> None:
    """alice pushes 4,000-character messages into a DM whose other member never reads;
    between chatd and that client sit nginx's small buffers and four kernel socket
    buffers, then chatd's own (--out-buffer, 1 MiB), past which chatd closes it 4001."""

    def closes_4001() -> float:
        _, text, _ = http_get(admin, "/metrics")
        m = re.search(r'^chatd_closes_total\{code="4001"\} (\S+)', text, re.M)
        return float(m.group(1)) if m else 0.0

    slow = await Raw.open(wss, ctx, max_queue=1)
    await slow.auth(tokens["slow"])
    sender = await Raw.open(wss, ctx)
    await sender.auth(tokens["alice"])
    conv = (await sender.request("dm.open", user="slow"))["d"]["conv"]
    before = await asyncio.to_thread(closes_4001)
    text = "x" * 4000
    sent = closed = 0
    t0 = time.monotonic()
    while not closed and sent < args.slow_max and time.monotonic() - t0 < 90:
        for i in range(200):
            await sender.ws.send(json.dumps({"id": f"s{sent + i}", "op": "send",
                                             "d": {"conv": conv, "cid": f"slow-{sent + i}", "text": text}}))
        replies = 0
        async with asyncio.timeout(30):
            while replies < 200:
                if "id" in json.loads(await sender.ws.recv()):
                    replies += 1
        sent += 200
        closed = int(await asyncio.to_thread(closes_4001) > before)
    took = time.monotonic() - t0
    pushed_mb = sent * 4100 / 1e6  # a push frame is the text plus ~100 bytes
    facts["slow_consumer"] = {"messages": sent, "pushed_mb": round(pushed_mb, 1), "seconds": round(took, 1)}
    ck.add(
        "a client that stops reading is closed by chatd (4001, slow consumer) behind nginx",
        bool(closed),
        f"after {sent} messages (~{pushed_mb:.0f} MB pushed) in {took:.1f} s" if closed
        else f"not closed after {sent} messages (~{pushed_mb:.0f} MB) in {took:.1f} s",
    )
    await sender.ws.close()
    slow.ws.transport.abort()


# -- the run -----------------------------------------------------------------------------


async def run(args: argparse.Namespace, ck: Checks, facts: dict[str, Any]) -> None:
    doc = str(args.doc_text)
    block = marked(doc, "chatd-nginx")
    tmp = Path(tempfile.mkdtemp(prefix="deploy-check-"))
    facts["tmp"] = str(tmp)
    ca = make_certs(tmp)
    os.environ["SSL_CERT_FILE"] = str(ca)  # how the reference client (no ssl argument) trusts a private CA
    ctx = ssl.create_default_context(cafile=str(ca))

    ports = {k: benchlib.free_port() for k in ("chatd", "http", "https", "admin", "c_http", "c_https", "c_admin")}
    main_dir, ctl_dir = tmp / "nginx", tmp / "nginx-control"
    control_block = re.sub(r"^\s*proxy_(read|send)_timeout[^\n]*\n", "", block, flags=re.M)
    if control_block == block:
        raise SystemExit("the nginx block sets no proxy_read_timeout/proxy_send_timeout to test")
    for d, blk, pre in ((main_dir, block, ""), (ctl_dir, control_block, "c_")):
        for sub_dir in ("logs", "temp"):
            (d / sub_dir).mkdir(parents=True)
        conf = rewrite(
            blk, chatd=ports["chatd"], http=ports[pre + "http"], https=ports[pre + "https"],
            admin=ports[pre + "admin"], certs=tmp, logs=d / "logs",
        )
        (d / "nginx.conf").write_text(nginx_conf(conf, d))
    ok, out = await asyncio.to_thread(nginx_test, main_dir)
    ck.add("nginx -t accepts the doc's block (ports, addresses, paths rewritten)", ok, out)
    ok2, out2 = await asyncio.to_thread(nginx_test, ctl_dir)
    ck.add("nginx -t accepts the control (the block without its two timeout lines)", ok2, out2)
    if not (ok and ok2):
        return
    ok3, said = await asyncio.to_thread(systemd_verify, doc, tmp)
    ck.add("systemd-analyze verify accepts the doc's units (ExecStart pointed at this venv)", ok3, said)

    # chatd as the doc runs it: a TOML file, the secret in the environment
    secret = os.urandom(32).hex()
    db = tmp / "state" / "chatd.db"
    db.parent.mkdir()
    toml = tmp / "chatd.toml"
    toml.write_text(
        f'host = "127.0.0.1"\nport = {ports["chatd"]}\ndb = "{db}"\nlog_format = "json"\nlog_level = "info"\n'
        f'drain_timeout = 5.0\nping_interval = {args.chatd_ping}\ntrusted_proxies = ["127.0.0.1"]\nnotify_hook = ["deploy_hook:Record"]\n'
        # one client must be able to fill the pipe for the slow-consumer check: the limits out of its way
        "send_rate = 100000.0\nsend_burst = 100000\nrequest_rate = 100000.0\nrequest_burst = 100000\n"
    )
    # a notification hook as a deployment plugs in its push bridge: here it writes a line per notification
    (tmp / "deploy_hook.py").write_text(HOOK)
    notes = tmp / "notes.jsonl"
    chatd_env = {
        "CHATD_SECRET": secret,
        "DEPLOY_NOTES": str(notes),
        "PYTHONPATH": os.pathsep.join(p for p in (str(tmp), os.environ.get("PYTHONPATH", "")) if p),
    }
    started = time.monotonic()
    serve_argv = [*chatd_argv(), "serve", "--config", str(toml)]
    chatd = benchlib.start_server(serve_argv, core=None, name="chatd", env=chatd_env)
    await benchlib.wait_healthz(ports["chatd"], 30, chatd)
    facts["chatd_ready_s"] = round(time.monotonic() - started, 2)
    nginx = benchlib.start_server(nginx_argv(main_dir), core=None, name="nginx")
    control = benchlib.start_server(nginx_argv(ctl_dir), core=None, name="nginx-control")
    for port in (ports["http"], ports["https"], ports["admin"], ports["c_https"]):
        await benchlib.wait_tcp("127.0.0.1", port, 10)
    wss, wss_control = f"wss://127.0.0.1:{ports['https']}/", f"wss://127.0.0.1:{ports['c_https']}/"
    env = {"CHATD_SECRET": secret}
    tokens = {
        u: await asyncio.to_thread(chatd_cmd, "token", "--user", u, "--type", t, "--name", u.title(), env=env)
        for u, t in (("alice", "owner"), ("bob", "fan"), ("idler", "fan"), ("idler2", "fan"), ("carol", "fan"),
                     ("slow", "fan"))
    }
    dev_env = {k: v for k, v in os.environ.items() if k != "CHATD_SECRET"}
    dev_token = await asyncio.to_thread(
        lambda: subprocess.run(
            [*chatd_argv(), "token", "--user", "mallory", "--type", "staff"],
            capture_output=True, text=True, timeout=60, env=dev_env, check=True,
        ).stdout.strip()
    )

    # idle sockets first: they sit through everything below
    idle = await Raw.open(wss, ctx)
    idle_ctl = await Raw.open(wss_control, ctx)
    for r, u in ((idle, "idler"), (idle_ctl, "idler2")):
        rep = await r.auth(tokens[u])
        if "error" in rep:
            raise RuntimeError(f"idle socket auth: {rep}")
    idle_since = time.monotonic()
    watchers = [asyncio.create_task(r.watch_close()) for r in (idle, idle_ctl)]
    print(f"  two sockets idle from now ({args.idle:.0f} s): one through the block, one through the control", flush=True)

    # -- plain HTTP and the two sides
    status, _, location = await asyncio.to_thread(http_get, ports["http"], "/some/path?x=1")
    ck.add("port 80 redirects to https", status == 301 and location.startswith("https://"), f"{status} {location}")
    public = {}
    for path in ("/healthz", "/metrics", "/metrics?x=1", "//metrics", "/%6Detrics", "/healthz/", "/./metrics"):
        public[path] = (await asyncio.to_thread(https_get, ports["https"], path, ctx))[0]
    ck.add(
        "public side: /healthz, /metrics and encodings of them answer 404",
        all(s == 404 for s in public.values()),
        ", ".join(f"{p} {s}" for p, s in public.items()),
    )
    status, body, _ = await asyncio.to_thread(http_get, ports["admin"], "/healthz")
    try:
        health = json.loads(body)
    except ValueError:
        health = {}
    ck.add(
        "private side: /healthz is 200 with JSON status, store, bus, draining",
        status == 200 and set(health) == {"status", "store", "bus", "draining"} and health["status"] == "ok",
        f"{status} {body.strip()}",
    )
    status, _, _ = await asyncio.to_thread(http_get, ports["admin"], "/metrics")
    ck.add("private side: /metrics is 200", status == 200, str(status))
    status, _, _ = await asyncio.to_thread(http_get, ports["admin"], "/healthz", CLIENT_ADDR)
    ck.add(f"private side: 403 from an address outside its allow list ({CLIENT_ADDR})", status == 403, str(status))

    # -- WebSockets through nginx
    r = await Raw.open(wss + "?client=deploy-check", ctx, (MSGPACK_SUB,))  # a query string still reaches chatd
    ck.add("subprotocol chatd.v1.msgpack negotiated through nginx (at /?client=...)", r.ws.subprotocol == MSGPACK_SUB,
           str(r.ws.subprotocol))
    await r.ws.close()
    r = await Raw.open(wss, ctx, ("chat",))
    code = await closed_code(r.ws)
    ck.add("a client offering no chatd subprotocol is closed 4203 (close codes pass nginx)", code == 4203, str(code))
    r = await Raw.open(wss, ctx)
    try:
        await r.auth(dev_token)
    except ConnectionClosed:
        pass
    code = await closed_code(r.ws)
    ck.add("a token signed with the development secret is refused (4101)", code == 4101, str(code))

    from chatd_client import Client

    bob = Client(wss, tokens["bob"], encoding="msgpack", reconnect=False)
    await bob.connect()
    ck.add("reference client (msgpack) authenticates over wss, certificate verified", bob.connected, "bob")
    alice = await Raw.open(wss, ctx, source=CLIENT_ADDR)
    ck.add("subprotocol chatd.v1.json negotiated through nginx", alice.ws.subprotocol == JSON_SUB, str(alice.ws.subprotocol))
    rep = await alice.auth(tokens["alice"])
    ck.add("alice authenticates with a token of the configured secret", rep.get("d", {}).get("user", {}).get("id") == "alice",
           json.dumps(rep.get("d", {}).get("user", rep)))
    epoch_before = rep.get("d", {}).get("epoch")
    conv = (await alice.request("dm.open", user="bob"))["d"]["conv"]
    await alice.request("dm.open", user="alice")  # bad_request: an error reply for the metrics below
    ack = await alice.request("send", conv=conv, cid="deploy-1", text="hello through nginx")
    seq = ack.get("d", {}).get("seq")
    ck.add("alice's message is acknowledged", isinstance(seq, int), json.dumps(ack.get("d", ack)))
    got = None
    try:
        async with asyncio.timeout(10):
            async for event in bob.events():
                if event.type == "msg" and event.d.get("conv") == conv:
                    got = event.d
                    break
    except TimeoutError:
        pass
    ck.add(
        "bob receives it through nginx (second client)",
        got is not None and got.get("text") == "hello through nginx" and got.get("seq") == seq,
        json.dumps({k: got.get(k) for k in ("conv", "seq", "from", "text")}) if got else "nothing within 10 s",
    )
    await bob.close()

    # -- the doc's backup script while chatd serves
    script = tmp / "chatd-backup"
    script.write_text("#!/bin/sh\n" + marked(doc, "chatd-backup"))
    script.chmod(0o755)
    backups = tmp / "backups"
    backups.mkdir()
    out = await asyncio.to_thread(
        subprocess.run, [str(script)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CHATD_DB": str(db), "CHATD_BACKUP_DIR": str(backups)},
    )
    made = sorted(backups.glob("chatd-*.db"))
    ck.add("the doc's backup script copies the store while chatd serves (VACUUM INTO, integrity ok)",
           out.returncode == 0 and len(made) == 1, (out.stdout + out.stderr).strip())
    after = await alice.request("send", conv=conv, cid="deploy-2", text="after the backup")
    seq_after = after.get("d", {}).get("seq")

    # -- idle through the block vs the control
    await asyncio.sleep(max(0.0, idle_since + args.idle - time.monotonic()))
    try:
        pong = await idle.request("ping")
        alive = "d" in pong
    except (ConnectionClosed, TimeoutError):
        alive = False
    idle_for = time.monotonic() - idle_since
    ck.add(f"a socket idle {idle_for:.0f} s is still open through the block (proxy_read_timeout)", alive,
           "answered ping" if alive else f"closed after {(idle.closed_at or 0) - idle_since:.1f} s")
    if args.control:
        closed = idle_ctl.closed_at
        ck.add(
            "control: without the timeout lines nginx closes the same idle socket (so the lines matter)",
            closed is not None,
            f"closed after {closed - idle_since:.1f} s, code {idle_ctl.ws.close_code}" if closed else "still open",
        )
        facts["control_closed_s"] = round(closed - idle_since, 1) if closed else None
    for w in watchers:
        w.cancel()

    # -- the notification hook of the config saw bob offline
    seen = [json.loads(ln) for ln in notes.read_text().splitlines()] if notes.exists() else []
    ck.add("the config's notification hook is called for bob once he is offline",
           any(n.get("user") == "bob" and n.get("conv") == conv for n in seen), json.dumps(seen)[:300])

    # -- the doc's metrics exist
    _, scrape, _ = await asyncio.to_thread(http_get, ports["admin"], "/metrics")
    series = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}
    named = metric_names(doc)
    missing = sorted(n for n in named if n not in series and n + "_bucket" not in series)
    ck.add(f"every metric named in the doc's 'What to watch' ({len(named)}) is in a real scrape", not missing,
           "missing: " + ", ".join(missing) if missing else "")
    wanted = ('chatd_op_seconds_bucket{op="send"}', 'chatd_closes_total{code="4101"}', 'chatd_closes_total{code="4203"}')
    absent = [w for w in wanted if not labelled(scrape, w)]
    ck.add("labelled series the alerts use exist (send latency; closes by code)", not absent,
           "absent: " + ", ".join(absent) if absent else ", ".join(wanted))


    # -- remote addresses in the logs
    await alice.ws.close()
    await asyncio.sleep(0.5)
    logged = [rec for rec in chatd_log(chatd) if str(rec.get("msg", "")).startswith("connection closed") and rec.get("user") == "alice"]
    remote = str(logged[-1].get("remote")) if logged else ""
    ck.add("chatd logged the client's address from nginx's X-Forwarded-For (trusted_proxies)", remote == CLIENT_ADDR,
           remote or "no line")
    access = (main_dir / "logs" / "chatd.access.log").read_text()
    mine = [ln for ln in access.splitlines() if ln.startswith(CLIENT_ADDR + " ") and " 101 " in ln and JSON_SUB in ln]
    ck.add("nginx's access log has the client's address, 101 and the subprotocol", bool(mine), mine[-1] if mine else access[-300:])
    facts["nginx_access_line"] = mine[-1] if mine else ""
    facts["chatd_close_line"] = logged[-1] if logged else {}

    # -- a client that stops reading, behind nginx: chatd's outbound cap still closes it
    if args.slow:
        await slow_consumer(args, ck, facts, wss, ctx, tokens, ports["admin"])

    # -- SIGTERM drains through nginx
    last = await Raw.open(wss, ctx)
    await last.auth(tokens["carol"])
    t0 = time.monotonic()
    chatd.send_signal(signal.SIGTERM)
    code = await closed_code(last.ws, 30)
    rc = await asyncio.to_thread(chatd.wait, 60)
    stop_s = time.monotonic() - t0
    facts["drain_s"] = round(stop_s, 2)
    ck.add("SIGTERM: the socket through nginx is closed 4000 (reconnect)", code == 4000, str(code))
    ck.add("SIGTERM: chatd exits 0 after draining", rc == 0, f"exit {rc} after {stop_s:.2f} s")
    try:
        r = await Raw.open(wss, ctx)
        await r.ws.close()
        status_down: int | str = "handshake succeeded"
    except InvalidStatus as exc:
        status_down = exc.response.status_code
    ck.add("with chatd stopped, nginx answers the handshake 502", status_down == 502, str(status_down))

    # -- restore as the doc says, then new-epoch
    replaced = db.parent / "replaced"
    replaced.mkdir()
    for f in db.parent.glob("chatd.db*"):
        f.rename(replaced / f.name)
    shutil.copyfile(made[0], db)
    epoch_new = await asyncio.to_thread(chatd_cmd, "new-epoch", "--db", str(db))
    chatd2 = benchlib.start_server(serve_argv, core=None, name="chatd-restored", env=chatd_env)
    await benchlib.wait_healthz(ports["chatd"], 30, chatd2)
    r = await Raw.open(wss, ctx)
    rep = await r.auth(tokens["bob"])
    epoch_after = rep.get("d", {}).get("epoch")
    hist = await r.request("history", conv=conv)
    texts = [m.get("text") for m in hist.get("d", {}).get("messages", [])]
    ck.add("restored store serves under a new epoch (chatd new-epoch)",
           bool(epoch_after) and epoch_after != epoch_before and epoch_after == epoch_new,
           f"{epoch_before} -> {epoch_after}")
    ck.add("restored store has the message before the backup, not the one after",
           "hello through nginx" in texts and "after the backup" not in texts,
           f"history {texts}; seq after the backup was {seq_after}")
    await r.ws.close()
    benchlib.stop_server(chatd2)
    for p in (nginx, control):
        benchlib.stop_server(p)
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--idle", type=float, default=75.0, help="seconds a socket stays idle (nginx's default cuts at 60)")
    ap.add_argument("--no-control", dest="control", action="store_false", help="skip the control's check")
    ap.add_argument("--chatd-ping", type=float, default=0.0,
                    help="chatd's ping_interval (0: none, so the idle socket is really idle)")
    ap.add_argument("--no-slow", dest="slow", action="store_false", help="skip the slow-consumer check")
    ap.add_argument("--slow-max", type=int, default=40000, help="messages the slow-consumer check sends at most")
    ap.add_argument("--doc", default=str(DOC), help="the deployment doc whose blocks are run")
    ap.add_argument("--save", metavar="FILE", help="also write the checks as a markdown table to FILE")
    args = ap.parse_args()
    args.doc_text = Path(args.doc).read_text()
    benchlib.install_watchdog(int(args.idle) + 240)
    ck, facts = Checks(), {}
    facts["nginx"] = nginx_version()
    rev = benchlib.git_rev()  # at the start: others may commit while it runs
    started = time.monotonic()
    try:
        asyncio.run(run(args, ck, facts))
    except Exception as exc:  # a step that could not run is a failure, reported like one
        ck.add("run completed", False, f"{type(exc).__name__}: {exc}")
    finally:
        benchlib.stop_all()
    took = time.monotonic() - started
    n_pass = sum(1 for v, _, _ in ck.rows if v == "PASS")
    print(f"\n{n_pass} passed, {ck.failed} failed, {len(ck.rows) - n_pass - ck.failed} skipped in {took:.0f} s "
          f"(nginx {facts['nginx']}, chatd {benchlib.chatd_label()})")
    if args.save:
        rows = [{"v": v, "n": n, "d": d.replace("|", "\\|")} for v, n, d in ck.rows]
        table = benchlib.md_table(rows, [("", "v"), ("check", "n"), ("detail", "d")])
        Path(args.save).write_text(
            f"`{' '.join(['python', *sys.argv])}`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, git "
            f"{rev}, nginx {facts['nginx']}, chatd {benchlib.chatd_label()}, {took:.0f} s\n\n{table}\n\n"
            f"```json\n{json.dumps({k: v for k, v in facts.items() if k != 'tmp'}, indent=2)}\n```\n"
        )
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
