"""Plain HTTP on the WebSocket port: a small route table instead of an
``if path ==`` chain: ``/healthz``, ``/metrics`` and the web console's
``/console/...`` (console.py). The admin API has a listener of its own (admin.py).

websockets calls the table for every request before the upgrade: a route
answers with a response; a path without one goes on to the WebSocket
handshake (any path serves the WebSocket).
"""

from __future__ import annotations

import email.utils
import http
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from ..bus import Bus
from ..metrics import CONTENT_TYPE_LATEST, Metrics
from .session import Lifecycle

Route = Callable[[str], Response]  # called with the query string ("" for none)


class Health(Protocol):
    """What /healthz asks of the store's writer (the pipeline)."""

    @property
    def running(self) -> bool: ...

    @property
    def failing(self) -> bool: ...


def respond(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: Sequence[tuple[str, str]] = (),
) -> Response:
    """A complete HTTP response; the connection closes after it (as websockets' own rejections)."""
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            *extra,
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


@dataclass(frozen=True, slots=True)
class Routes:
    table: dict[str, Route]
    life: Lifecycle

    def match(self, path: str) -> Response | None:
        """The response for ``path``, or None: the request is a WebSocket upgrade."""
        path, _, query = path.partition("?")
        route = self.table.get(path)
        if route is not None:
            return route(query)
        if self.life.draining:
            return respond(503, b"draining\n")
        return None


def _bus_state(bus: Bus) -> str:
    """up, local (one process), down, or degraded: some of a cluster's shards
    deliver (one is failing over). A degraded node stays ready: its clients
    resync when the shard is back, and taking every node out of the load
    balancer for a failover would be the outage the cluster is there to avoid."""
    if not bus.shared:
        return "local"
    if bus.up:
        return "up"
    links = bus.health()
    return "degraded" if 0 < links["links_up"] < links["links"] else "down"


def health_routes(life: Lifecycle, bus: Bus, metrics: Metrics, store: Health) -> dict[str, Route]:
    def healthz(_query: str) -> Response:
        """200 when the node serves; 503 (not ready) while it starts or drains, or
        a dependency is down. The body says each dependency's state, as JSON."""
        state: dict[str, object] = {
            "store": "ok" if store.running and not store.failing else "failing" if store.running else "stopped",
            "bus": _bus_state(bus),
            "draining": life.draining,
        }
        links = bus.health()
        if links["links"] > 1:  # a Redis Cluster: how many shards' masters deliver
            state["bus_shards"] = f"{links['links_up']}/{links['links']}"
        ready = life.ready and not life.draining and state["store"] == "ok" and state["bus"] != "down"
        body = orjson.dumps({"status": "ok" if ready else "not ready", **state}) + b"\n"
        return respond(200 if ready else 503, body, "application/json")

    def prometheus(_query: str) -> Response:
        return respond(200, metrics.render(), CONTENT_TYPE_LATEST)

    return {"/healthz": healthz, "/metrics": prometheus}
