"""Redis URLs: one server, or a Redis Cluster.

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
  ``unix://...``: one Redis server (or a Sentinel-managed address in front of one).
- ``redis+cluster://[[user]:password@]host:port[,host:port...]`` and
  ``rediss+cluster://...``: a Redis Cluster (7.0 or later). The hosts are seeds:
  any reachable one tells chatd the rest (``CLUSTER SLOTS``), so one is enough and
  more survive a seed being down.

Keys on a cluster. A command that touches several keys must keep them in one hash
slot, so the callers that need that (presence's per-user keys) wrap the part that
groups them in ``{...}`` (``tag``) when ``is_cluster``; on one server the names stay
as they always were.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
MAX_SEEDS = 64


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def check(url: str) -> None:
    """ValueError with a sentence for a URL chatd cannot use."""
    try:
        u = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"--redis-url is not a URL: {exc}") from None
    if u.scheme not in SCHEMES:
        raise ValueError("--redis-url must be a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL")
    if u.scheme in CLUSTER_SCHEMES:
        seeds(url)


def _netloc_parts(u: SplitResult) -> tuple[str, str]:
    """(``user:password@`` or "", ``host:port,host:port``)."""
    at = u.netloc.rfind("@")
    return (u.netloc[: at + 1], u.netloc[at + 1 :]) if at >= 0 else ("", u.netloc)


def seeds(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` seeds of a cluster URL; ValueError if there are none or
    one is malformed."""
    u = urlsplit(url)
    _, hosts = _netloc_parts(u)
    out: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, "6379"
        host = host.strip("[]")
        if not host:
            raise ValueError(f"--redis-url: a cluster seed has no host ({part!r})")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--redis-url: a cluster seed's port must be 1-65535 ({part!r})")
        out.append((host, int(port)))
    if len(out) > MAX_SEEDS:
        raise ValueError(f"--redis-url: at most {MAX_SEEDS} cluster seeds")
    return out


def node_url(url: str, host: str, port: int) -> str:
    """The single-server URL of one cluster node, with the cluster URL's credentials
    and TLS."""
    u = urlsplit(url)
    creds, _ = _netloc_parts(u)
    scheme = CLUSTER_SCHEMES.get(u.scheme, u.scheme)
    h = f"[{host}]" if ":" in host else host
    return f"{scheme}://{creds}{h}:{port}"


def credentials(url: str) -> tuple[str | None, str | None]:
    """(username, password) of a URL, unquoted."""
    u = urlsplit(url)
    creds, _ = _netloc_parts(u)
    if not creds:
        return None, None
    user, sep, password = creds[:-1].partition(":")
    return (unquote(user) or None, unquote(password) if sep else None)


def client(url: str, **options: Any) -> Any:
    """A redis-py asyncio client: ``Redis`` for one server, ``RedisCluster`` (which
    follows MOVED/ASK and failovers itself) for a cluster URL. ``options`` are
    connection options both take (timeouts)."""
    import redis.asyncio as aioredis

    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **options)
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    user, password = credentials(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in seeds(url)],
        username=user,
        password=password,
        ssl=urlsplit(url).scheme == "rediss+cluster",
        **options,
    )


def tag(name: str, cluster: bool) -> str:
    """``name`` as a hash tag on a cluster (keys sharing it share a slot)."""
    return "{" + name + "}" if cluster else name


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    u = urlsplit(url)
    creds, hosts = _netloc_parts(u)
    if not creds:
        return url
    user, _ = credentials(url)
    return f"{u.scheme}://{quote(user or '')}:***@{hosts}{u.path}"


# -- the cluster's key space (what SSUBSCRIBE/SPUBLISH and every command route by) --

SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, as Redis Cluster hashes keys."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def slot(key: str | bytes) -> int:
    """The hash slot of a key or shard channel (its ``{tag}`` only, where it has a
    non-empty one)."""
    k = key.encode() if isinstance(key, str) else key
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    return crc16(k) % SLOTS
