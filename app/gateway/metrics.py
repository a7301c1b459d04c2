"""The gateway's /metrics (prometheus-client, a registry of its own): instances stored,
series rounds by outcome, deliveries per destination, and the queue read from the store
at each scrape. Labels carry destinations and states, never a UID or a patient's data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.gateway.store import GatewayStore


class Metrics:
    """The gateway's /metrics, in a registry of its own."""

    def __init__(self, store: GatewayStore) -> None:
        self.registry = CollectorRegistry()
        self.instances = Counter(
            "unet_gateway_instances", "instances stored", registry=self.registry
        )
        self.series = Counter(
            "unet_gateway_series",
            "series rounds by outcome: received (stable), segmented, refused, skipped (no model "
            "is meant for their modality), sent",
            ["outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "unet_gateway_deliveries",
            "results sent to a destination, by outcome (sent, failed: retried)",
            ["destination", "outcome"],
            registry=self.registry,
        )
        queue = Gauge(
            "unet_gateway_queue",
            "rounds by state, and results waiting for a destination ('to <destination>')",
            ["state"],
            registry=self.registry,
        )
        self._store, self._queue, self._known = store, queue, set[str]()
        self.refresh()

    def refresh(self) -> None:
        counts = self._store.counts()
        for state in self._known - set(counts):
            self._queue.labels(state).set(0)
        for state, n in counts.items():
            self._queue.labels(state).set(n)
        self._known |= set(counts)
