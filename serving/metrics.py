"""Serving metrics through ``ray.util.metrics`` (exported by Ray's metrics agent / Prometheus).

Created lazily inside the process that records them (a Serve replica or ingress).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


class ServingMetrics:
    """The serving package's metrics.

    * ``serving_model_switch_seconds{tier, engine}``: time to make a model usable, by the tier it
      came from (``hot``, ``parked``, ``disk``, ``object_storage``).
    * ``serving_cache_requests_total{tier, result}``: cache hits and misses per tier.
    * ``serving_queue_length{replica}``: requests in a replica (waiting for a load or generating).
    * ``serving_tokens_per_second{model}``: generated tokens per second of each request.
    * ``serving_requests_total{route, status}``: answered API requests by route and HTTP status.
    """

    def __init__(self) -> None:
        from ray.util import metrics

        self.switch_seconds = metrics.Histogram(
            "serving_model_switch_seconds",
            description="Time to make a model usable, by source tier.",
            boundaries=_SECONDS,
            tag_keys=("tier", "engine"),
        )
        self.cache_requests = metrics.Counter(
            "serving_cache_requests_total",
            description="Model cache lookups by tier and result (hit/miss).",
            tag_keys=("tier", "result"),
        )
        self.queue_length = metrics.Gauge(
            "serving_queue_length",
            description="Requests inside a model replica (waiting or generating).",
            tag_keys=("replica",),
        )
        self.tokens_per_second = metrics.Histogram(
            "serving_tokens_per_second",
            description="Generated tokens per second per request.",
            boundaries=[1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000],
            tag_keys=("model",),
        )
        self.requests = metrics.Counter(
            "serving_requests_total",
            description="Answered API requests by route and HTTP status.",
            tag_keys=("route", "status"),
        )

    def switch(self, tier: str, engine: str, seconds: float) -> None:
        """Records one model switch."""
        self.switch_seconds.observe(seconds, tags={"tier": tier, "engine": engine})

    def queue(self, length: int) -> None:
        """Records the number of requests inside this replica process."""
        self.queue_length.set(length, tags={"replica": str(os.getpid())})

    def request(self, route: str, status: int) -> None:
        """Records one answered API request."""
        self.requests.inc(1, tags={"route": route, "status": str(status)})

    def cache(self, tier: str, hit: bool) -> None:
        """Records one cache lookup."""
        self.cache_requests.inc(1, tags={"tier": tier, "result": "hit" if hit else "miss"})


@lru_cache(maxsize=1)
def get_metrics() -> Any:
    """The process's :class:`ServingMetrics` (created on first use)."""
    return ServingMetrics()
