"""Serving metrics through ``ray.util.metrics`` (exported by Ray's metrics agent / Prometheus).

Created lazily inside the process that records them (a Serve replica or ingress).
"""

from __future__ import annotations

import os
from collections.abc import Container
from functools import lru_cache
from typing import Any

ROUTES = frozenset(
    {
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/completions",
        "/v1/chat/completions",
        "/docs",
        "/redoc",
        "/openapi.json",
    }
)
"""Route templates the ``route`` label takes; any other value is recorded as ``other``."""

NO_MODEL = "none"
"""The ``model`` label of requests that name no model (e.g. ``GET /v1/models``)."""

UNKNOWN_MODEL = "unknown"
"""The ``model`` label of requests naming a model that is not served."""


def route_label(route: str) -> str:
    """A route template from :data:`ROUTES`, or ``"other"`` (never a raw request path)."""
    return route if route in ROUTES else "other"


def status_label(status: int) -> str:
    """An HTTP status code as a label (``"other"`` outside 100-599)."""
    return str(status) if 100 <= status <= 599 else "other"


def model_label(model_id: object, served: Container[str]) -> str:
    """A served model's id; ``"unknown"`` for any other id, ``"none"`` when there is none.

    Args:
        model_id: the model the request named (anything a client sent).
        served: the ids of the served models.
    """
    if model_id is None:
        return NO_MODEL
    if isinstance(model_id, str) and model_id in served:
        return model_id
    return UNKNOWN_MODEL


_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


class ServingMetrics:
    """The serving package's metrics.

    * ``serving_model_switch_seconds{tier, engine}``: time to make a model usable, by the tier it
      came from (``hot``, ``parked``, ``disk``, ``object_storage``).
    * ``serving_cache_requests_total{tier, result}``: cache hits and misses per tier.
    * ``serving_queue_length{replica}``: requests in a replica (waiting for a load or generating).
    * ``serving_tokens_per_second{model}``: generated tokens per second of each request.
    * ``serving_requests_total{route, status, model}``: answered API requests by route template
      (never the raw path), HTTP status and served model (``unknown`` for any other id).

    Every label value comes from a bounded set, so a client cannot grow the number of time
    series (see :func:`route_label`, :func:`status_label` and :func:`model_label`).
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
            description="Answered API requests by route template, HTTP status and model.",
            tag_keys=("route", "status", "model"),
        )

    def switch(self, tier: str, engine: str, seconds: float) -> None:
        """Records one model switch."""
        self.switch_seconds.observe(seconds, tags={"tier": tier, "engine": engine})

    def queue(self, length: int) -> None:
        """Records the number of requests inside this replica process."""
        self.queue_length.set(length, tags={"replica": str(os.getpid())})

    def request(self, route: str, status: int, model: str = NO_MODEL) -> None:
        """Records one answered API request.

        Args:
            route: the route template (e.g. ``/v1/models/{model_id}``); others become ``other``.
            status: the HTTP status answered.
            model: a label from :func:`model_label` (served id, ``unknown`` or ``none``).
        """
        tags = {"route": route_label(route), "status": status_label(status), "model": model}
        self.requests.inc(1, tags=tags)

    def cache(self, tier: str, hit: bool) -> None:
        """Records one cache lookup."""
        self.cache_requests.inc(1, tags={"tier": tier, "result": "hit" if hit else "miss"})


@lru_cache(maxsize=1)
def get_metrics() -> Any:
    """The process's :class:`ServingMetrics` (created on first use)."""
    return ServingMetrics()
