"""Fault injection: the replica holding a model is killed during a streaming request."""

from __future__ import annotations

import openai
import pytest
import ray

from tests.serving.conftest import Served

pytestmark = pytest.mark.chaos


def _model_replicas(app_name: str) -> list[str]:
    return [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["name"].startswith("SERVE_REPLICA::")
        and app_name in entry["name"]
        and "ModelServer" in entry["name"]
    ]


def test_replica_killed_mid_stream_gives_a_clean_error_and_the_next_request_succeeds(
    served: Served,
) -> None:
    client = openai.OpenAI(base_url=served.url, api_key=served.api_key, max_retries=0, timeout=120)
    client.completions.create(model="tiny-1", prompt="warm the model up please", max_tokens=4)
    [replica] = _model_replicas(served.config.app_name)
    stream = client.completions.create(
        model="tiny-1",
        prompt="a long story about porous crystals",
        max_tokens=200,
        temperature=1.0,
        stream=True,
    )
    received = 0
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            received += 1
            if received == 1:
                ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=False)
    assert received < 200
    message = str(caught.value).lower()
    assert "retry" in message or "replica" in message or "unavailable" in message
    # Serve replaces the replica; the very next request waits for it and succeeds.
    answer = client.completions.create(
        model="tiny-1", prompt="and then the next request", max_tokens=4
    )
    assert answer.choices[0].text is not None
