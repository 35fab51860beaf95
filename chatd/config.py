"""Server configuration: one frozen dataclass, filled by the CLI or by tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .clock import Clock, SystemClock

DEV_SECRET = "chatd-development-secret-loopback-only"


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    db_path: str = "chatd.db"  # the store: a SQLite file path (or sqlite:<path>), or a postgresql:// URL
    secret: str | None = None  # HS256 secret; None: the development secret (loopback, no other key)
    token_public_key: str | None = None  # PEM file: RS256 or EdDSA tokens signed by a backend
    token_jwks: str | None = None  # JWKS file of public keys, chosen by the token's kid
    token_algorithms: tuple[str, ...] = ()  # accepted; () = those the configured keys verify
    sync: str = "full"  # SQLite synchronous: "full" (fsync per commit) or "normal"
    max_frame: int = 64 * 1024  # bytes; larger frames are refused with 1009
    max_text: int = 4000  # characters of message text
    send_rate: float = 10.0  # messages per second per user (sustained)
    send_burst: int = 30  # messages per user in a burst
    request_rate: float = 200.0  # requests per second per connection
    request_burst: int = 400
    flood_strikes: int = 50  # refused requests in a row before closing with 4202
    auth_timeout: float = 10.0  # seconds
    out_buffer: int = 1024 * 1024  # bytes queued to one socket before 4001
    recall_window_s: int = 120
    live_attend_s: int = 300  # seconds a viewer watches before attendance counts (points)
    live_question_max: int = 300  # a live question's length limit, in code points
    read_receipt_max_members: int = 200
    max_batch: int = 2000  # writes per store transaction (group commit)
    drain_timeout: float = 5.0  # seconds to flush on shutdown
    ping_interval: float | None = 20.0
    redis_url: str | None = None  # None: in-memory bus (this process only)
    bus_shards: int = 1024  # channels per key family (docs/design.md, fan-out across processes)
    bus_prefix: str = "chatd"
    reuse_port: bool = False  # SO_REUSEPORT (``--workers``)
    presence_lease_ms: int = 15_000  # a node silent this long is reaped (its users go offline)
    presence_max_subs: int = 256  # presence subscriptions per connection
    points: bool = True  # run the points hooks (the worker); False: events are still recorded
    points_hooks: tuple[str, ...] = ()  # extra hooks, "module:attr"
    points_rules: str | None = None  # TOML rules file replacing the built-in defaults
    service_policy: str | None = None  # TOML file of the service groups' clock policy (docs/service-groups.md)
    points_stream: str | None = None  # forward every event to this Redis stream (needs redis_url)
    points_day_offset_h: int = 8  # the community's calendar day: UTC+8
    hook_timeout_s: float = 5.0
    points_yield_ms: int = 20  # pause between worker batches while chat writes are queued
    red_packet_ttl_s: int = 86_400
    dm_unknown_users: bool = False  # open DMs to user ids the server never saw (provisioned elsewhere)
    circles_per_hour: int = 10  # circles a user may create per hour (0: no limit; staff and bots: none)
    new_dms_per_hour: int = 60  # new DM conversations a user may open per hour (0: no limit)
    notify_hooks: tuple[str, ...] = ()  # offline notification hooks, "module:attr" (none: no notifications)
    notify_stream: str | None = None  # also forward every notification to this Redis stream (needs redis_url)
    notify_coalesce_s: int = 60  # at most one notification per user and conversation this often (0: every message)
    admin_port: int | None = None  # the admin API's HTTP listener (None: off; 0: any free port)
    admin_host: str = "127.0.0.1"  # loopback by default: backends reach it through their own network
    admin_max_body: int = 1 << 20  # bytes of an admin request body (larger: 413)
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For names the client (logs)
    clock: Clock = field(default_factory=SystemClock)  # every timer, bucket, lease and expiry takes it

    @property
    def signing_secret(self) -> str | None:
        """The HS256 secret tokens may be signed with: the configured one, or the
        development secret when no key of any kind is configured."""
        if self.secret:
            return self.secret
        return None if self.token_public_key or self.token_jwks else DEV_SECRET

    def check(self) -> None:
        """Refuse configurations that must not start. Raises ValueError with why."""
        if self.signing_secret == DEV_SECRET and not is_loopback(self.host):
            raise ValueError(
                f"refusing to bind {self.host!r} with the development secret: set --secret (or CHATD_SECRET), "
                "--token-public-key or --token-jwks to serve on a non-loopback address"
            )
        if self.admin_port is not None and self.signing_secret == DEV_SECRET and not is_loopback(self.admin_host):
            raise ValueError(
                f"refusing to serve the admin API on {self.admin_host!r} with the development secret: anyone could "
                "sign an admin token; set --secret, --token-public-key or --token-jwks"
            )
        if self.admin_port and self.admin_port == self.port:
            raise ValueError("--admin-port must differ from --port (the admin API has a listener of its own)")
        if self.presence_lease_ms < 300:
            raise ValueError("presence lease must be at least 0.3 s")
        if self.points_stream and not self.redis_url:
            raise ValueError("--points-stream needs --redis-url")
        if self.notify_stream and not self.redis_url:
            raise ValueError("--notify-stream needs --redis-url")
        if self.notify_coalesce_s < 0:
            raise ValueError("--notify-coalesce takes 0 (no coalescing) or more seconds")
        if self.service_policy is not None:
            from .policy import ServicePolicy

            ServicePolicy.from_file(self.service_policy)  # a bad file does not start; the error names the key
        from .edge.proxy import trusted_networks

        trusted_networks(self.trusted_proxies)
        if self.bus_shards < 1:
            raise ValueError("bus shards must be at least 1")
        if self.redis_url is not None:
            from .redisurl import check, is_cluster

            check(self.redis_url)
            if is_cluster(self.redis_url) and ("{" in self.bus_prefix or "}" in self.bus_prefix):
                raise ValueError("bus_prefix must not hold a brace on a Redis Cluster (it would move the keys' hash tag)")
        if self.circles_per_hour < 0 or self.new_dms_per_hour < 0:
            raise ValueError("--circles-per-hour and --new-dms-per-hour take 0 (no limit) or more")
        if self.points_yield_ms < 0:
            raise ValueError("--points-yield-ms must be 0 (never pause) or more")
        if self.sync not in ("full", "normal"):
            raise ValueError("sync must be 'full' or 'normal'")
        from .store import check_location

        check_location(self.db_path)  # a URL of an engine this server does not have is refused here


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
