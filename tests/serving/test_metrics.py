"""Serving metrics reach Ray's metrics export (Prometheus text): switch time per tier, cache lookups, queue
length, tokens/s and requests by status."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from serving.spec import ModelSpec
from tests.harness import MetricsRay, serving_app


@pytest.fixture(scope="module")
def metrics_served(
    metrics_ray: MetricsRay,
    shared_serve: None,
    s3_specs: list[ModelSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, int]]:
    """One model served on the Ray that exports metrics every 0.5 s; yields (API URL, metrics port)."""
    from serving.app import ServingConfig
    from serving.cache import CacheConfig

    metrics_port = metrics_ray.connect()
    cache_root = Path(tmp_path_factory.mktemp("metrics-cache"))
    config = ServingConfig(
        app_name=f"metrics-{uuid.uuid4().hex[:6]}",
        replica_cpus=0.5,
        ingress_cpus=0.1,
        cache=CacheConfig(root=str(cache_root), namespace=f"metrics-{uuid.uuid4().hex[:6]}"),
    )
    with serving_app([s3_specs[0]], config) as app:
        yield app.url, metrics_port


def _scrape(
    port: int,
    names: tuple[str, ...],
    timeout: float = 60.0,
    ready: Callable[[dict[str, str]], bool] = lambda found: True,
) -> dict[str, list[str]]:
    """The exported lines of each metric, once all have some and ``ready`` holds (on their text).

    The processes export on their own clocks, so the first scrape can hold only some series.
    """
    deadline = time.monotonic() + timeout
    found: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        found = {
            name: [
                line
                for line in text.splitlines()
                if line.startswith(f"ray_{name}") and not line.startswith("#")
            ]
            for name in names
        }
        if all(found.values()) and ready({k: " ".join(v) for k, v in found.items()}):
            return found
        time.sleep(1)
    missing = [name for name, lines in found.items() if not lines]
    pytest.fail(f"metrics never exported: {missing or found}")


def test_serving_metrics_are_exported(metrics_served: tuple[str, int]) -> None:
    url, port = metrics_served
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    for _ in range(3):
        client.completions.create(model="tiny-0", prompt="the metal node binds", max_tokens=6)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(
            model="no-such-model", prompt="the metal node binds", max_tokens=6
        )
    found = _scrape(
        port,
        (
            "serving_model_switch_seconds_count",
            "serving_cache_requests_total",
            "serving_queue_length",
            "serving_tokens_per_second_count",
            "serving_requests_total",
            "serving_usage_completion_tokens_total",
        ),
        ready=lambda found: (
            'result="hit"' in found["serving_cache_requests_total"]
            and 'status="404"' in found["serving_requests_total"]
        ),
    )
    switches = " ".join(found["serving_model_switch_seconds_count"])
    assert 'tier="object_storage"' in switches
    lookups = " ".join(found["serving_cache_requests_total"])
    assert 'result="hit"' in lookups and 'result="miss"' in lookups
    usage = " ".join(found["serving_usage_completion_tokens_total"])
    assert 'key="anonymous"' in usage and 'model="tiny-0"' in usage  # no API key: one caller
    requests = " ".join(found["serving_requests_total"])
    assert (
        'route="/v1/completions"' in requests
        and 'status="200"' in requests
        and 'status="404"' in requests
    )


def _series(port: int, prefix: str) -> list[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _total(lines: list[str], needle: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if needle in line)


def test_request_labels_stay_bounded_under_random_paths_and_models(
    metrics_served: tuple[str, int],
) -> None:
    url, port = metrics_served
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    ids = [f"rnd-{uuid.uuid4().hex}" for _ in range(60)]
    for model_id in ids:
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(model_id)
    for model_id in ids[:20]:
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model=model_id, prompt="the metal node", max_tokens=2)
    deadline = time.monotonic() + 60
    lines = _series(port, "ray_serving_requests_total")
    while _total(lines, 'status="404"') < 80:
        assert time.monotonic() < deadline, lines[:20]
        time.sleep(1)
        lines = _series(port, "ray_serving_requests_total")
    routes = {line.split('route="', 1)[1].split('"', 1)[0] for line in lines}
    assert routes <= {
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/completions",
        "/v1/chat/completions",
        "other",
    }, routes
    models = {line.split('model="', 1)[1].split('"', 1)[0] for line in lines if 'model="' in line}
    assert models <= {"tiny-0", "unknown", "none"}, models
    assert "unknown" in models
    assert len(lines) <= 12, lines
    everything = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    leaked = [model_id for model_id in ids if model_id.encode() in everything]
    assert not leaked, f"{len(leaked)} random ids became label values"
