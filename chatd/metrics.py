"""Prometheus metrics, one registry per server instance (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("chatd_connections", "Open authenticated connections", registry=r)
        self.messages = Counter("chatd_messages", "Messages committed", ["kind"], registry=r)
        self.deliveries = Counter("chatd_deliveries", "Frames pushed to sockets", registry=r)
        self.errors = Counter("chatd_request_errors", "Error replies by code", ["code"], registry=r)
        self.closes = Counter("chatd_closes", "Connections closed by the server, by code", ["code"], registry=r)
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
        self.interactions = Counter("chatd_interactions", "Interaction events emitted", ["kind"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
