"""Prometheus metrics of the tumorbench ingress, exported by Ray's metrics agent with Serve's own.

``ray.serve.metrics`` adds the deployment, replica and application tags; Ray exports every
metric at ``http://<node>:<metrics-export-port>/metrics`` (``ray start --metrics-export-port
8080``). Names below get Ray's ``ray_`` prefix there, e.g. ``ray_tumorbench_requests_total``.
"""

from __future__ import annotations

from typing import Any

ROUTES = ("/healthz", "/readyz", "/v1/models", "/v1/stats", "/v1/classify", "/v1/segment", "/docs", "/openapi.json")
BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
STAGES = ("decode", "inference", "postprocess")


class Telemetry:
    """Request counts by route and status; decode / inference / post-processing latency histograms."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "tumorbench_requests", "HTTP requests by route and status code", tag_keys=("path", "status")
        )
        self.latency = {
            stage: metrics.Histogram(
                f"tumorbench_{stage}_ms",
                f"{stage} time of a prediction request in milliseconds",
                boundaries=BOUNDARIES_MS,
                tag_keys=("model",),
            )
            for stage in STAGES
        }

    def count(self, path: str, status: int) -> None:
        # Unknown paths share one tag: a scanner's random paths must not grow the series without bound.
        # "path", not "route": Serve fills its own "route" tag (the app's route prefix) in every replica metric.
        self.requests.inc(tags={"path": path if path in ROUTES else "other", "status": str(status)})

    def observe(self, model: str, **stages_ms: Any) -> None:
        for stage, value in stages_ms.items():
            self.latency[stage].observe(float(value), tags={"model": model})


class BatchTelemetry:
    """A model replica's batches (:class:`tumorbench.serving.batcher.Batcher`): sizes, waits, queue length."""

    def __init__(self, model: str) -> None:
        from ray.serve import metrics

        self.tags = {"model": model}
        self.size = metrics.Histogram(
            "tumorbench_batch_size", "requests per batch", boundaries=BATCH_SIZES, tag_keys=("model",)
        )
        self.wait = metrics.Histogram(
            "tumorbench_batch_wait_ms",
            "how long a batch's oldest request waited for it to start, in milliseconds",
            boundaries=BOUNDARIES_MS,
            tag_keys=("model",),
        )
        self.queued = metrics.Gauge(
            "tumorbench_batch_queue_length", "requests queued behind the batch that started", tag_keys=("model",)
        )

    def observe(self, size: int, waited_s: float, queued: int) -> None:
        self.size.observe(size, tags=self.tags)
        self.wait.observe(1000 * waited_s, tags=self.tags)
        self.queued.set(queued, tags=self.tags)
