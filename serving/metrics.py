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
    * ``serving_usage_requests_total{key, model}``, ``serving_usage_prompt_tokens_total{key, model}``,
      ``serving_usage_completion_tokens_total{key, model}``: answered generations and their tokens by
      API key id (never the secret; ids come from the key file) and model.
    * ``serving_rate_limited_total{key, reason}``: requests refused with ``429`` (``requests``,
      ``tokens``: a per-minute limit; ``queue``: the key's queue was full).

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

        self.usage_requests = metrics.Counter(
            "serving_usage_requests_total",
            description="Answered generations by API key id and model.",
            tag_keys=("key", "model"),
        )
        self.usage_prompt_tokens = metrics.Counter(
            "serving_usage_prompt_tokens_total",
            description="Prompt tokens of answered generations by API key id and model.",
            tag_keys=("key", "model"),
        )
        self.usage_completion_tokens = metrics.Counter(
            "serving_usage_completion_tokens_total",
            description="Generated tokens by API key id and model.",
            tag_keys=("key", "model"),
        )
        self.rate_limited = metrics.Counter(
            "serving_rate_limited_total",
            description="Requests refused with 429 by API key id and reason.",
            tag_keys=("key", "reason"),
        )

    def usage(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Records one answered generation of ``key_id`` on ``model`` (a served model's id)."""
        tags = {"key": key_id, "model": model}
        self.usage_requests.inc(1, tags=tags)
        if prompt_tokens:
            self.usage_prompt_tokens.inc(prompt_tokens, tags=tags)
        if completion_tokens:
            self.usage_completion_tokens.inc(completion_tokens, tags=tags)

    def limited(self, key_id: str, reason: str) -> None:
        """Records one request refused with ``429`` (``reason``: requests, tokens or queue)."""
        self.rate_limited.inc(1, tags={"key": key_id, "reason": reason})

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
