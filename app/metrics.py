"""Prometheus collectors with the names of ../shared/API.md, one registry per app.

A registry per app (not prometheus-client's global one) so that several apps
in one process -- the tests -- do not collide.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Seconds: a tiny image on a GPU takes ~10 ms, a 8192 x 8192 stack on a CPU a minute.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# A job: a second for a small image, hours for a gigapixel mosaic with the default model.
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 3 * 3600.0, 12 * 3600.0)


class Metrics:
    """The service's collectors; ``exposition()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "unet_requests_total",
            "HTTP requests answered, by route template and numeric status",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "unet_request_duration_seconds",
            "Time from request start to the end of the response, seconds",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "unet_inference_duration_seconds",
            "Model time per image (all frames, tiles and TTA flips), seconds",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("unet_images", "Images segmented", ["model"], registry=r)
        self.tiles = Counter("unet_tiles", "Tiles run through the network", ["model"], registry=r)
        self.pixels = Counter(
            "unet_pixels", "Pixels segmented (width x height x frames)", ["model"], registry=r
        )
        self.in_flight = Gauge(
            "unet_requests_in_flight", "HTTP requests being answered now", registry=r
        )
        self.queued = Gauge(
            "unet_requests_queued", "Segment requests waiting for the model now", registry=r
        )
        self.model_info = Gauge(
            "unet_model_info",
            "The models being served (value 1): repository name, card name and version",
            ["model", "name", "version", "provider"],
            registry=r,
        )
        self.jobs = Gauge("unet_jobs", "Jobs by status, now", ["status"], registry=r)
        self.job_tiles = Counter("unet_job_tiles", "Tiles run for jobs", registry=r)
        self.job_duration = Histogram(
            "unet_job_duration_seconds",
            "Time from a job's start to its end (succeeded or failed), seconds",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)

    def segmented(self, model: str, pixels: int, tiles: int, inference_s: float) -> None:
        """One image segmented by ``model``: width x height x frames pixels, its tiles, the
        network's seconds."""
        self.images.labels(model).inc()
        self.tiles.labels(model).inc(tiles)
        self.pixels.labels(model).inc(pixels)
        self.inference_duration.labels(model).observe(inference_s)

    def exposition(self) -> bytes:
        """The Prometheus text format of every collector."""
        return generate_latest(self.registry)
