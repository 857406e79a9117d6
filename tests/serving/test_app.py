"""The Serve app end to end over HTTP with the official ``openai`` client and real S3 weights.

One replica holds at most two of four models: LRU switching, second loads from the node cache
(counted by the cache), streaming, and every bad-input case of the API.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import Served

# The first test asserts the replica's whole history: this module gets an app no other module has used
# (`served`, tests/serving/conftest.py; test_chaos and test_client use it after this module).
SERVED_FRESH = True


def _complete(client: openai.OpenAI, model: str, prompt: str = "The agent asked the model") -> Any:
    return client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key=served.api_key, max_retries=0, timeout=120)


def _raw(served: Served, path: str, body: bytes, key: str | None = "") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key or served.api_key}"
    req = urllib.request.Request(served.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_lru_switching_and_reloads_come_from_the_node_cache(
    served: Served, client: openai.OpenAI
) -> None:
    # Must run first: it asserts the replica's whole history.
    order = ["tiny-0", "tiny-1", "tiny-0", "tiny-2", "tiny-3", "tiny-1", "tiny-0"]
    resident = []
    for model in order:
        out = _complete(client, model)
        assert out.model == model and out.choices[0].finish_reason in ("length", "stop")
        resident.append(served.replica_stats().resident)
    assert resident == [
        ["tiny-0"],
        ["tiny-0", "tiny-1"],
        ["tiny-1", "tiny-0"],
        ["tiny-0", "tiny-2"],
        ["tiny-2", "tiny-3"],
        ["tiny-3", "tiny-1"],
        ["tiny-1", "tiny-0"],
    ]
    stats = served.replica_stats()
    assert [(e.model_id, e.tier) for e in stats.loads] == [
        ("tiny-0", "object_storage"),
        ("tiny-1", "object_storage"),
        ("tiny-2", "object_storage"),
        ("tiny-3", "object_storage"),
        ("tiny-1", "disk"),
        ("tiny-0", "disk"),
    ]
    assert stats.unloads == ["tiny-1", "tiny-0", "tiny-2", "tiny-3"]  # each evicted engine once
    assert stats.hot_hits == 1
    cache = served.cache_stats()
    assert cache.fetches == 4 and cache.misses["disk"] == 4 and cache.hits["disk"] == 2
    assert cache.misses["engine"] == 6 and cache.hits["engine"] == 1
    deadline = time.monotonic() + 10  # unload reports are fire-and-forget
    while served.cache_stats().engines != {"tiny-1": 1, "tiny-0": 1}:
        assert time.monotonic() < deadline, served.cache_stats().engines
        time.sleep(0.1)


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny-0", "tiny-1", "tiny-2", "tiny-3", "corrupt", "missing"]
    assert client.models.retrieve("tiny-2").id == "tiny-2"


def test_completion_usage_and_streaming_match(client: openai.OpenAI) -> None:
    whole = _complete(client, "tiny-0")
    assert whole.object == "text_completion"
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 8
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.completions.create(
        model="tiny-0", prompt="The agent asked the model", max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_completion_and_streaming_chat(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    whole = client.chat.completions.create(
        model="tiny-1", messages=messages, max_tokens=6, temperature=0
    )
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage.completion_tokens <= 6
    stream = client.chat.completions.create(
        model="tiny-1", messages=messages, max_tokens=6, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_unknown_model_is_404_in_openai_shape(served: Served, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        _complete(client, "no-such-model")
    assert err.value.status_code == 404 and err.value.code == "model_not_found"
    status, body = _raw(
        served,
        "/chat/completions",
        b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
    )
    assert status == 404 and body["error"]["param"] == "model"
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/completions", b'{"model": "tiny-0", "prompt": "hi",', None),
        ("/completions", b'["not", "an", "object"]', None),
        ("/completions", b'{"model": "tiny-0"}', "prompt"),
        ("/completions", b'{"model": "tiny-0", "prompt": "hi", "max_tokens": "5"}', "max_tokens"),
        ("/completions", b'{"model": "tiny-0", "prompt": "hi", "temperature": 9}', "temperature"),
        (
            "/chat/completions",
            b'{"model": "tiny-0", "messages": [{"role": "user"}]}',
            "messages.0.content",
        ),
        ("/chat/completions", b'{"model": 5, "messages": []}', "model"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    served: Served, path: str, body: bytes, param: str | None
) -> None:
    status, answer = _raw(served, path, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    if param:
        assert param in answer["error"]["message"]


_CHAT = '"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        ("/completions", '"stop": ["a", "b", "c", "d", "e"]', "stop"),
        ("/completions", '"stop": ["a", 5]', "stop.1"),
        ("/completions", f'"seed": {2**64}', "seed"),
        ("/completions", f'"seed": {-(2**64)}', "seed"),
        ("/completions", '"max_tokens": 0', "max_tokens"),
        ("/completions", f'"max_tokens": {2**70}', "max_tokens"),
        ("/completions", '"n": 2', "n"),
        ("/completions", '"temperature": -0.5', "temperature"),
        ("/completions", '"top_p": 0', "top_p"),
        ("/completions", '"logprobs": 6', "logprobs"),
        ("/completions", '"logprobs": 2', "logprobs"),
        ("/completions", '"presence_penalty": 2.5', "presence_penalty"),
        ("/completions", '"frequency_penalty": -3', "frequency_penalty"),
        ("/completions", '"best_of": 3', "best_of"),
        ("/chat/completions", '"stop": ["1", "2", "3", "4", "5", "6"]', "stop"),
        ("/chat/completions", f'"seed": {2**64}', "seed"),
        ("/chat/completions", '"max_completion_tokens": 0', "max_completion_tokens"),
        ("/chat/completions", '"logprobs": true', "logprobs"),
        ("/chat/completions", '"top_logprobs": 21', "top_logprobs"),
        ("/chat/completions", '"n": 3', "n"),
    ],
)
def test_out_of_range_fields_are_400_with_a_short_reason(
    served: Served, path: str, fields: str, param: str
) -> None:
    what = '"prompt": "hello there"' if path == "/completions" else _CHAT
    status, answer = _raw(served, path, f'{{"model": "tiny-0", {what}, {fields}}}'.encode())
    assert status == 400, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert len(error["message"]) < 300 and "Traceback" not in error["message"]


def test_in_range_fields_are_accepted(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model="tiny-0",
        prompt="hello there",
        max_tokens=3,
        stop=["a", "b", "c", "d"],
        seed=2**63 - 1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logprobs=None,
        n=1,
    )
    assert out.choices[0].finish_reason in ("length", "stop")
    chat = client.chat.completions.create(
        model="tiny-0",
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=3,
        seed=-(2**63),
        logprobs=False,
    )
    assert chat.choices[0].finish_reason in ("length", "stop")


def test_prompt_over_the_default_byte_bound_is_413(served: Served) -> None:
    body = json.dumps({"model": "tiny-0", "prompt": "a" * ((1 << 20) + 1)}).encode()
    status, answer = _raw(served, "/completions", body)
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large" and answer["error"]["param"] == "prompt"


def test_docs_and_openapi_need_the_key(served: Served) -> None:
    root = served.url.removesuffix("/").removesuffix("/v1")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert _get(root + path, None) == 401, path
        assert _get(root + path, "sk-wrong") == 401, path
        assert _get(root + path, served.api_key) == 200, path


def test_unknown_routes_answer_in_openai_shape(served: Served) -> None:
    status, answer = _raw(served, "/no/such/route", b"{}")
    assert status == 404 and answer["error"]["message"]


def test_prompt_longer_than_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _complete(client, "tiny-0", prompt="metal organic frameworks " * 200)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny-0", prompt="hello there", max_tokens=10_000)
    assert err.value.code == "context_length_exceeded" and err.value.param == "max_tokens"


def test_api_key_is_required(served: Served) -> None:
    body = b'{"model": "tiny-0", "prompt": "hello there friend"}'
    assert _raw(served, "/completions", body, key=None)[0] == 401
    status, answer = _raw(served, "/completions", body, key="sk-wrong")
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=served.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_broken_weights_are_a_clear_error_and_the_replica_keeps_serving(
    served: Served, client: openai.OpenAI
) -> None:
    for model in ("corrupt", "missing"):
        with pytest.raises(openai.APIStatusError) as err:
            _complete(client, model)
        assert err.value.status_code == 503
        assert err.value.code == "model_weights_unavailable"
        # No bucket path, URI, storage error or traceback: a generic reason and a request id.
        message = err.value.message
        for leak in ("s3://", "models/", "manifest", "checksum", "Traceback", "Error("):
            assert leak not in message, message
        request_id = err.value.response.headers["x-request-id"]
        assert request_id and request_id in message
    assert _complete(client, "tiny-3").choices[0].finish_reason in ("length", "stop")
    assert "corrupt" not in served.replica_stats().resident


def _get(url: str, key: str | None) -> int:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=60
        ) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_health_needs_no_key_but_every_other_route_does(served: Served) -> None:
    root = served.url.removesuffix("/").removesuffix("/v1")
    assert _get(root + "/health", None) == 200
    for path in ("/models", "/models/tiny-0"):
        assert _get(served.url + path, None) == 401
        assert _get(served.url + path, served.api_key) == 200
    for path in ("/completions", "/chat/completions"):
        assert _raw(served, path, b"{}", key=None)[0] == 401


def test_oversized_body_is_413_before_parsing(served: Served) -> None:
    body = b'{"model": "tiny-0", "prompt": "' + b"a" * (5 << 20) + b'"}'
    status, answer = _raw(served, "/completions", body)
    assert status == 413 and answer["error"]["code"] == "payload_too_large"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
request_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.sampled_from(["tiny-0", "tiny-1", "nope", ""]) | json_values,
            "prompt": st.text(max_size=60) | json_values,
            "messages": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "role": st.sampled_from(["user", "system", "x"]) | json_values,
                        "content": st.text(max_size=40) | json_values,
                    },
                ),
                max_size=3,
            )
            | json_values,
            "max_tokens": st.integers(-5, 40) | json_values,
            "temperature": st.floats(-1, 3, allow_nan=False) | json_values,
            "stream": st.booleans() | json_values,
        },
    ).map(lambda body: json.dumps(body).encode()),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=request_bodies, path=st.sampled_from(["/completions", "/chat/completions"]))
def test_fuzzed_requests_get_a_result_or_a_4xx_with_a_reason(
    served: Served, body: bytes, path: str
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {served.api_key}"}
    req = urllib.request.Request(served.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
            resp.read()
    except urllib.error.HTTPError as err:
        assert 400 <= err.code < 500, err.read()[:500]
        answer = json.loads(err.read())
        assert answer["error"]["message"]
