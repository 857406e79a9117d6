"""``serving.Client`` (async and blocking) against the real app."""

from __future__ import annotations

import pytest

from serving.client import Client
from serving.errors import (
    AuthenticationError,
    ContextLengthError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from tests.harness import Served


async def test_async_client_completes_chats_and_streams(served: Served) -> None:
    client = Client(served.url, api_key=served.api_key)
    assert await client.amodels() == ["tiny-0", "tiny-1", "tiny-2", "tiny-3", "corrupt", "missing"]
    done = await client.acomplete("tiny-2", "Scientists run many", max_tokens=6, temperature=0)
    assert done.completion_tokens <= 6 and done.prompt_tokens > 0
    pieces = [
        p
        async for p in client.astream("tiny-2", "Scientists run many", max_tokens=6, temperature=0)
    ]
    assert "".join(pieces) == done.text
    chat = await client.achat("tiny-2", [{"role": "user", "content": "hi there"}], max_tokens=4)
    assert chat.completion_tokens <= 4


def test_blocking_client_and_typed_errors(served: Served) -> None:
    client = Client(served.url, api_key=served.api_key)
    try:
        assert client.complete("tiny-1", "Ray schedules tasks", max_tokens=3).completion_tokens <= 3
        assert "".join(client.stream("tiny-1", "Ray schedules tasks", max_tokens=3, temperature=0))
        with pytest.raises(ModelNotFoundError, match="404"):
            client.complete("nope", "hello there friend")
        with pytest.raises(ContextLengthError) as err:
            client.complete("tiny-1", "word " * 400)
        assert err.value.param == "prompt"
    finally:
        client.close()
    with pytest.raises(AuthenticationError):
        Client(served.url, api_key="wrong").models()


def test_client_types_a_prompt_over_the_byte_bound(served: Served) -> None:
    client = Client(served.url, api_key=served.api_key)
    try:
        with pytest.raises(PayloadTooLargeError, match="413") as err:
            client.complete("tiny-1", "a" * ((1 << 20) + 1))
        assert err.value.param == "prompt" and err.value.status == 413
    finally:
        client.close()
