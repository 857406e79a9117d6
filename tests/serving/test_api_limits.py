"""Overload and size limits of the HTTP API, on a small app of its own with tight bounds.

Two tiny models on ONE replica that holds one at a time, 1 request generating and 1 queued per
replica, at most 6 requests inside the ingress, and a switch history of 3 entries. (One request
at a time per replica: the transformers engine's concurrent generations on one model are a
separate matter.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serving.spec import ModelSpec
from tests.harness import Served, serving_app, use_local_ray

BIG_PROMPT_BYTES = 4 << 20


@pytest.fixture(scope="module")
def limited(
    ray_local: None, shared_serve: None, s3_specs: list[ModelSpec], tmp_path_factory
) -> Iterator[Served]:
    """tiny-0 and tiny-1 behind tight overload bounds (no API key)."""
    from serving.app import ServingConfig
    from serving.cache import CacheConfig

    use_local_ray()
    config = ServingConfig(
        app_name=f"limits-{uuid.uuid4().hex[:6]}",
        max_models_per_replica=1,
        replica_cpus=0.5,
        ingress_cpus=0.1,
        max_ongoing_requests=1,
        max_queued_requests=1,
        ingress_max_requests=6,
        retry_after_seconds=2,
        max_prompt_bytes=8 << 20,
        max_body_bytes=16 << 20,
        switch_history=3,
        placement=None,
        cache=CacheConfig(
            root=str(tmp_path_factory.mktemp("limits-cache")),
            namespace=f"limits-{uuid.uuid4().hex[:8]}",
        ),
    )
    with serving_app(s3_specs[:2], config) as app:
        yield app


def test_api_flood_is_answered_503_with_retry_after_never_a_hang(limited: Served) -> None:
    body = {"model": "tiny-0", "prompt": "The agent asked the model", "max_tokens": 200}

    def post(max_tokens: int = 200) -> requests.Response:
        payload = {**body, "max_tokens": max_tokens}
        return requests.post(limited.url + "/completions", json=payload, timeout=120)

    assert post(1).status_code == 200  # the model is loaded
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda _: post(), range(24)))
    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 503} and statuses[200] >= 1 and statuses[503] >= 1, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) == 2
            error = answer.json()["error"]
            assert error["code"] == "server_overloaded" and error["type"] == "server_error"
    assert post(4).status_code == 200  # the bounds free up afterwards


def test_api_streams_give_their_in_flight_slot_back(limited: Served) -> None:
    body = {"model": "tiny-0", "prompt": "The agent asked", "max_tokens": 50, "stream": True}
    for _ in range(8):  # more streams than the ingress's bound of 6, read to the end
        with requests.post(limited.url + "/completions", json=body, stream=True, timeout=60) as r:
            assert r.status_code == 200 and b"[DONE]" in r.content
    for _ in range(8):  # and some dropped after their first event
        with requests.post(limited.url + "/completions", json=body, stream=True, timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_lines())
    deadline = time.monotonic() + 30
    while True:
        answer = requests.post(limited.url + "/completions", json={**body, "stream": False})
        if answer.status_code == 200:
            break
        assert time.monotonic() < deadline, answer.text  # dropped streams end on the server too
        time.sleep(0.5)


def _replica_actor(config) -> object:
    import ray

    names = [
        (actor["name"], actor["namespace"])
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if config.app_name in actor["name"] and "ModelServer" in actor["name"]
    ]
    assert len(names) == 1, names
    name, namespace = names[0]
    return ray.get_actor(name, namespace=namespace)


def test_api_health_answers_while_multi_mb_prompts_are_tokenised(limited: Served) -> None:
    import ray

    replica = _replica_actor(limited.config)
    root = limited.url.removesuffix("/v1")
    prompt = "metal organic frameworks " * (BIG_PROMPT_BYTES // 25)
    answers: list[requests.Response] = []

    def post() -> None:
        body = {"model": "tiny-0", "prompt": prompt, "max_tokens": 4}
        for _ in range(30):  # streams dropped by the test before may still hold the replica
            answer = requests.post(limited.url + "/completions", json=body, timeout=120)
            if answer.status_code != 503:
                break
            time.sleep(float(answer.headers["retry-after"]))
        answers.append(answer)

    posters = [threading.Thread(target=post) for _ in range(2)]
    for poster in posters:
        poster.start()
    time.sleep(1.0)  # the prompts reach the replica and are being tokenised
    replica_waits, http_waits = [], []
    while any(poster.is_alive() for poster in posters):
        start = time.perf_counter()
        ray.get(replica.check_health.remote(), timeout=60)  # Serve's health check of the replica
        replica_waits.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert requests.get(root + "/health", timeout=60).status_code == 200
        http_waits.append(time.perf_counter() - start)
        time.sleep(0.05)
    for poster in posters:
        poster.join()
    assert [a.status_code for a in answers] == [400, 400], [a.text[:300] for a in answers]
    assert {a.json()["error"]["code"] for a in answers} == {"context_length_exceeded"}
    assert max(replica_waits) < 1.0, replica_waits
    assert max(http_waits) < 1.0, http_waits
    assert len(replica_waits) >= 3, "the prompts were tokenised too fast to measure anything"


def test_api_prompt_over_the_byte_bound_is_413_before_tokenising(limited: Served) -> None:
    prompt = "a" * ((8 << 20) + 1)
    start = time.perf_counter()
    answer = requests.post(
        limited.url + "/completions", json={"model": "tiny-0", "prompt": prompt}, timeout=120
    )
    assert answer.status_code == 413, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "payload_too_large" and error["param"] == "prompt"
    assert time.perf_counter() - start < 5
    messages = [{"role": "user", "content": "b" * (5 << 20)}] * 2
    answer = requests.post(
        limited.url + "/chat/completions",
        json={"model": "tiny-0", "messages": messages},
        timeout=120,
    )
    assert answer.status_code == 413 and answer.json()["error"]["param"] == "messages"


def test_api_switch_history_of_a_replica_is_bounded(limited: Served) -> None:
    before = limited.replica_stats()
    for model in ["tiny-1", "tiny-0"] * 3:
        body = {"model": model, "prompt": "Ray schedules tasks", "max_tokens": 2}
        assert (
            requests.post(limited.url + "/completions", json=body, timeout=120).status_code == 200
        )
    stats = limited.replica_stats()
    assert len(stats.loads) <= 3 and len(stats.unloads) <= 3
    assert stats.load_count >= before.load_count + 6
    assert stats.unload_count >= before.unload_count + 6
    assert [e.model_id for e in stats.loads] == ["tiny-0", "tiny-1", "tiny-0"]


def test_api_warns_when_listening_beyond_localhost_without_a_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from serving.app import warn_if_exposed

    with caplog.at_level(logging.WARNING, logger="serving.app"):
        for host in ("127.0.0.1", "localhost", "::1"):
            warn_if_exposed(host, None)
        warn_if_exposed("0.0.0.0", "sk-key")
        assert not caplog.records
        warn_if_exposed("0.0.0.0", None)
    assert len(caplog.records) == 1 and "0.0.0.0" in caplog.records[0].getMessage()
    assert caplog.records[0].levelno == logging.WARNING
