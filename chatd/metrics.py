"""Prometheus metrics, one registry per server instance (tests run several).

Counters bumped on every message or delivery are plain ints read at scrape
time by a custom collector: prometheus_client's Counter takes a lock and a
labels() lookup per increment, which the hot path should not pay.
"""

from __future__ import annotations

import bisect
import platform
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "FastHistogram", "Metrics"]

# seconds: an op's answer is usually a few ms (a commit); a second is a stall
OP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class FastHistogram:
    """A histogram for the hot path: one bisect and one list increment per
    observation (prometheus_client's takes a lock and a labels() lookup), exported
    at scrape time."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = OP_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class Metrics:
    def __init__(self) -> None:
        # hot counters: plain ints, exported by _HotCollector
        self.text_messages = 0
        self.system_messages = 0
        self.deliveries = 0
        self.interactions: dict[str, int] = {}
        self.ops: dict[str, FastHistogram] = {}  # op -> time to its answer
        # set by the app: () -> {"up": 0/1, "channels", "published", "received", "dropped",
        # "resets", "gaps_filled", "presence_errors"} (the bus and fan-out layer's own counters)
        self.bus_stats: Callable[[], dict[str, int]] | None = None
        # set by the app: () -> {"lag_s", "awards", "yields"} of the points worker
        self.points_stats: Callable[[], dict[str, float]] | None = None

        r = self.registry = CollectorRegistry()
        r.register(_HotCollector(self))
        self.connections = Gauge("chatd_connections", "Open authenticated connections", registry=r)
        self.errors = Counter("chatd_request_errors", "Error replies by code", ["code"], registry=r)
        self.closes = Counter("chatd_closes", "Connections closed by the server, by code", ["code"], registry=r)
        self.notifications = Counter(
            "chatd_notifications",
            "Offline notification decisions by outcome: emitted, silent (quiet hours), coalesced, or why skipped",
            ["outcome"],
            registry=r,
        )
        self.notify_hook_failures = Counter(
            "chatd_notify_hook_failures", "Calls of a notification hook that failed", registry=r
        )
        self.store_failures = Counter("chatd_store_failures", "Store batches that failed to commit", registry=r)
        self.batch_size = Histogram(
            "chatd_store_batch_size",
            "Writes per transaction",
            registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
        )
        self.commit_seconds = Histogram(
            "chatd_store_commit_seconds",
            "Time to run and commit one batch",
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )

        # the process (CPU, memory, open files) and the platform, from
        # prometheus_client's own collectors; what this build is
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build = Info("chatd_build", "What is running", registry=r)
        self.build.info({"version": _version(), "python": platform.python_version()})

    def op(self, name: str) -> FastHistogram:
        h = self.ops.get(name)
        if h is None:
            h = self.ops[name] = FastHistogram()
        return h

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatd")
    except PackageNotFoundError:  # pragma: no cover - run from a copy of the sources
        return "0+unknown"


class _HotCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        messages = CounterMetricFamily("chatd_messages", "Messages committed", labels=["kind"])
        messages.add_metric(["text"], m.text_messages)
        messages.add_metric(["system"], m.system_messages)
        yield messages
        yield CounterMetricFamily("chatd_deliveries", "Frames pushed to sockets", value=m.deliveries)
        ops = HistogramMetricFamily("chatd_op_seconds", "Time from a request to its answer, by op", labels=["op"])
        for name, h in sorted(m.ops.items()):
            ops.add_metric([name], h.buckets(), h.total)
        yield ops
        events = CounterMetricFamily("chatd_interactions", "Interaction events emitted", labels=["kind"])
        for kind, n in sorted(m.interactions.items()):
            events.add_metric([kind], n)
        yield events
        if m.bus_stats is not None:
            st = m.bus_stats()
            yield GaugeMetricFamily("chatd_bus_up", "1 while the bus delivers (Redis reachable)", value=st.get("up", 0))
            yield GaugeMetricFamily("chatd_bus_channels", "Bus channels subscribed", value=st.get("channels", 0))
            yield GaugeMetricFamily(
                "chatd_bus_links", "Redis servers the bus uses (a cluster's masters)", value=st.get("links", 1)
            )
            yield GaugeMetricFamily("chatd_bus_links_up", "Redis servers the bus delivers through", value=st.get("links_up", 0))
            for name, help_ in (
                ("published", "Envelopes published to other nodes"),
                ("received", "Envelopes received from other nodes"),
                ("dropped", "Envelopes not published (bus down or failing)"),
                ("resets", "Times the bus (re)connected and the node resynchronised"),
                ("remote_resets", "Resyncs because another node may have lost envelopes"),
                ("map_changes", "Times a Redis Cluster's slot map changed (a failover, a resharding)"),
                ("gaps_filled", "Seq gaps in pushes filled from the store"),
                ("presence_errors", "Presence updates that failed (e.g. Redis down)"),
            ):
                yield CounterMetricFamily(f"chatd_bus_{name}", help_, value=st.get(name, 0))
        if m.points_stats is not None:
            ps = m.points_stats()
            yield GaugeMetricFamily(
                "chatd_points_lag_seconds",
                "Age of the oldest interaction event the points worker had not processed at its last batch",
                value=ps.get("lag_s", 0),
            )
            yield CounterMetricFamily("chatd_points_awards", "Ledger entries that moved points", value=ps.get("awards", 0))
            yield CounterMetricFamily(
                "chatd_points_yields", "Pauses the points worker took for queued chat writes", value=ps.get("yields", 0)
            )
