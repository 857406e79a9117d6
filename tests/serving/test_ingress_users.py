"""Many users on the real app, through the official ``openai`` client: keys from a key file beside the
shared key, revocation without a restart, per-key limits (429 + Retry-After), fair queueing, usage.

One app for the module: tiny-0 and tiny-1 on one replica, ONE request let through to it at a time
(``engine_slots=1``) and three waiting per key, so that a burst fills its key's queue at once; the
limits are held by the app's keeper actor (``shared_limits``), as several ingress replicas need.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import openai
import pytest
import requests

from serving.auth import MAX_AUTHORIZATION_BYTES, hash_key
from serving.cli import main as serving_cli
from serving.cli import revoke_key
from serving.errors import KeyFileError
from serving.spec import ModelSpec
from tests.harness import Served, free_port, serving_app, use_local_ray

SECRETS = {
    name: f"sk-{name}-{uuid.uuid4().hex}"
    for name in ("alice", "bob", "carol", "lim", "tally", "tok")
}
SHARED = f"sk-shared-{uuid.uuid4().hex}"
MAX_QUEUED = 3


def _write(path: Path, keys: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": keys}))
    tmp.replace(path)


def _entries() -> list[dict]:
    entries = [{"id": name, "sha256": hash_key(secret)} for name, secret in SECRETS.items()]
    entries[3]["requests_per_minute"] = 2  # lim
    entries[5]["tokens_per_minute"] = 40  # tok
    return entries


@pytest.fixture(scope="module")
def users(
    ray_local: None,
    shared_serve: None,
    s3_specs: list[ModelSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Path]]:
    """The app and its key file."""
    from serving.app import ServingConfig
    from serving.cache import CacheConfig
    from serving.config import UsersConfig

    use_local_ray()
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    _write(keys_file, _entries())
    config = ServingConfig(
        app_name=f"users-{uuid.uuid4().hex[:6]}",
        max_models_per_replica=2,
        replica_cpus=0.5,
        ingress_cpus=0.1,
        api_key=SHARED,
        placement=None,
        users=UsersConfig(
            keys_file=str(keys_file),
            reload_interval_s=0.2,
            engine_slots=1,
            max_queued_per_key=MAX_QUEUED,
            shared_limits=True,  # the buckets in the app's keeper actor (the local ones: test_quota)
        ),
        cache=CacheConfig(
            root=str(tmp_path_factory.mktemp("users-cache")),
            namespace=f"users-{uuid.uuid4().hex[:8]}",
        ),
    )
    with serving_app(s3_specs[:2], config) as app:
        yield app, keys_file


def client(served: Served, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key=secret, max_retries=0, timeout=120)


def complete(
    served: Served, secret: str, max_tokens: int = 4, model: str = "tiny-0"
) -> openai.types.Completion:
    return client(served, secret).completions.create(
        model=model, prompt="The agent asked the model", max_tokens=max_tokens
    )


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def test_file_keys_and_the_shared_key_are_served_and_a_revoked_key_is_401_without_restart(
    users: tuple[Served, Path],
) -> None:
    served, keys_file = users
    complete(served, SHARED)  # the single shared key still works, beside the file's keys
    complete(served, SECRETS["carol"])
    with pytest.raises(openai.AuthenticationError):
        complete(served, "sk-not-a-key")
    revoke_key(keys_file, "carol")

    def refused() -> bool:
        try:
            complete(served, SECRETS["carol"], max_tokens=1)
        except openai.AuthenticationError as exc:
            return "revoked" in str(exc)
        return False

    eventually(refused)
    complete(served, SECRETS["bob"])

    keys_file.write_text('{"keys": [{"id": "bob"')  # malformed: the keys in force stay
    time.sleep(0.5)  # past the reload interval: the ingress has seen the bad file
    complete(served, SECRETS["bob"], max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        complete(served, SECRETS["carol"], max_tokens=1)
    entries = _entries()
    entries[2]["revoked"] = True
    _write(keys_file, entries)


def test_a_malformed_key_file_fails_before_deploying(tmp_path: Path) -> None:
    from serving.app import ServingConfig, serve_models
    from serving.config import UsersConfig

    bad = tmp_path / "keys.json"
    bad.write_text('{"keys": [{"id": "x", "sha256": "abc"}]}')
    config = ServingConfig(users=UsersConfig(keys_file=str(bad)))
    with pytest.raises(KeyFileError, match=r"keys\.0\.sha256"):
        serve_models([], config, port=free_port())


def test_over_its_limit_a_key_gets_rate_limit_error_with_retry_after_and_others_are_served(
    users: tuple[Served, Path],
) -> None:
    served, _ = users
    complete(served, SECRETS["lim"], max_tokens=1)
    complete(served, SECRETS["lim"], max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        complete(served, SECRETS["lim"], max_tokens=1)
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 30  # one request per 30 s comes back
    assert caught.value.code == "rate_limit_exceeded"
    assert "requests per minute" in caught.value.message
    from serving import Client, RateLimitError

    ours = Client(served.url, api_key=SECRETS["lim"], timeout=60)
    try:
        with pytest.raises(RateLimitError) as refused:  # serving's own client says it too
            ours.complete("tiny-0", "x", max_tokens=1)
    finally:
        ours.close()
    assert refused.value.status == 429 and 1 <= refused.value.retry_after <= 30
    complete(served, SECRETS["bob"], max_tokens=1)  # another key is served meanwhile


def test_over_its_tokens_per_minute_a_key_gets_rate_limit_error(users: tuple[Served, Path]) -> None:
    served, _ = users
    # 40 tokens a minute. A request is admitted while the key's bucket is not in debt; it reserves its
    # max_tokens (20) and is later charged what it used instead (its usage: the prompt and what it
    # generated, which is fewer than 20 tokens when the tiny model happens to end early).
    used: list[int] = []
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(12):
            answer = complete(served, SECRETS["tok"], max_tokens=20)
            assert answer.usage is not None
            used.append(answer.usage.total_tokens)
    refilled = (time.monotonic() - started) * 40 / 60
    assert used, "the key's first request was refused"
    # Each answered request was charged its reservation or its usage: between the smaller and the larger.
    assert sum(max(20, n) for n in used) >= 40 - 1, (
        used
    )  # refused only once the minute's tokens were spent
    assert sum(min(20, n) for n in used[:-1]) <= 40 - 1 + refilled, (
        used
    )  # never admitted after that
    assert "tokens per minute" in caught.value.message
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_a_burst_of_one_key_fills_its_queue_and_does_not_starve_another(
    users: tuple[Served, Path],
) -> None:
    served, _ = users
    complete(served, SECRETS["alice"], max_tokens=1)  # the model is loaded
    finished: list[str] = []
    lock = threading.Lock()

    def send(tag: str, secret: str) -> str:
        try:
            complete(served, secret, max_tokens=200)
        except openai.RateLimitError as exc:
            assert exc.code == "queue_full" and exc.response.headers["retry-after"]
            return "refused"
        with lock:
            finished.append(tag)
        return "served"

    with ThreadPoolExecutor(max_workers=14) as pool:
        burst = [pool.submit(send, f"a{i}", SECRETS["alice"]) for i in range(12)]
        first_refusal = next(f for f in as_completed(burst) if f.result() == "refused")
        assert first_refusal.done()  # alice's queue is full now: bob asks
        bob = [pool.submit(send, f"b{i}", SECRETS["bob"]) for i in range(2)]
        outcomes = [f.result() for f in burst]
        assert [f.result() for f in bob] == ["served", "served"]
    served_a = outcomes.count("served")
    # the first four of the burst got in (one generating, MAX_QUEUED waiting); the rest were refused
    # at once while the queue was full, never left hanging
    assert served_a >= MAX_QUEUED + 1 and served_a + outcomes.count("refused") == len(burst)
    # round robin: bob's first request waited behind the one generating and the next of alice's,
    # not behind her whole queue (first come, first served would put it after all of them)
    first_b = finished.index("b0")
    assert sum(tag.startswith("a") for tag in finished[:first_b]) <= 3 < served_a, finished
    assert any(tag.startswith("a") for tag in finished[first_b:]), finished


def test_usage_by_key_and_model_matches_what_was_sent(
    users: tuple[Served, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    served, _ = users
    tally = client(served, SECRETS["tally"])
    expected: dict[str, list[int]] = {"tiny-0": [0, 0, 0], "tiny-1": [0, 0, 0]}
    for model, max_tokens in (("tiny-0", 3), ("tiny-0", 7), ("tiny-1", 5)):
        result = tally.completions.create(
            model=model, prompt="metal nodes bind", max_tokens=max_tokens
        )
        assert result.usage is not None
        expected[model] = [
            expected[model][0] + 1,
            expected[model][1] + result.usage.prompt_tokens,
            expected[model][2] + result.usage.completion_tokens,
        ]
    chat = tally.chat.completions.create(
        model="tiny-1", messages=[{"role": "user", "content": "a linker"}], max_tokens=4
    )
    assert chat.usage is not None
    expected["tiny-1"] = [
        expected["tiny-1"][0] + 1,
        expected["tiny-1"][1] + chat.usage.prompt_tokens,
        expected["tiny-1"][2] + chat.usage.completion_tokens,
    ]
    stream = tally.completions.create(
        model="tiny-0", prompt="metal nodes bind", max_tokens=6, stream=True
    )
    streamed = sum(1 for _ in stream)
    assert streamed >= 1
    with pytest.raises(openai.NotFoundError):  # not a generation: not counted
        tally.completions.create(model="no-such-model", prompt="x", max_tokens=2)

    from serving.usage import read_usage

    def tally_rows() -> dict[str, list[int]]:
        return {
            row.model: [row.requests, row.prompt_tokens, row.completion_tokens]
            for row in read_usage(served.config.app_name)
            if row.key_id == "tally"
        }

    eventually(lambda: tally_rows().get("tiny-1") == expected["tiny-1"])
    eventually(lambda: tally_rows().get("tiny-0", [0])[0] == expected["tiny-0"][0] + 1)
    rows = tally_rows()
    assert set(rows) == {"tiny-0", "tiny-1"}
    requests0, prompt0, generated0 = rows["tiny-0"]
    stream_prompt = prompt0 - expected["tiny-0"][1]
    assert stream_prompt == expected["tiny-0"][1] // 2  # the same prompt as the two before
    assert 1 <= generated0 - expected["tiny-0"][2] <= 6  # the stream's tokens
    assert serving_cli(["usage", "--app", served.config.app_name, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {(r["key_id"], r["model"], r["requests"]) for r in printed} >= {
        ("tally", "tiny-0", requests0),
        ("tally", "tiny-1", expected["tiny-1"][0]),
    }
    assert not any(secret in json.dumps(printed) for secret in SECRETS.values())


def test_huge_authorization_headers_are_refused(users: tuple[Served, Path]) -> None:
    served, _ = users
    body = {"model": "tiny-0", "prompt": "x", "max_tokens": 1}
    header = {"Authorization": "Bearer " + "k" * (MAX_AUTHORIZATION_BYTES + 1)}
    answer = requests.post(served.url + "/completions", json=body, headers=header, timeout=30)
    assert answer.status_code == 401 and "longer than" in answer.json()["error"]["message"]
    header = {"Authorization": "Bearer " + "k" * (1 << 20)}
    try:
        answer = requests.post(served.url + "/completions", json=body, headers=header, timeout=30)
    except requests.ConnectionError:
        return  # the HTTP server closed the connection on the oversized header
    assert 400 <= answer.status_code < 500, answer.status_code


def test_a_lost_keeper_does_not_stop_the_service_and_is_made_again(
    users: tuple[Served, Path],
) -> None:
    import ray

    from serving.usage import USAGE_NAMESPACE, keeper_name, read_usage

    served, _ = users
    name = keeper_name(served.config.app_name)
    ray.kill(ray.get_actor(name, namespace=USAGE_NAMESPACE), no_restart=True)
    complete(served, SECRETS["bob"], max_tokens=1)  # limited by the ingress's own buckets

    def counted_again() -> bool:  # a new keeper is made for the next requests, and counts them
        complete(served, SECRETS["bob"], max_tokens=1)
        return any(row.key_id == "bob" for row in read_usage(served.config.app_name))

    eventually(counted_again)
