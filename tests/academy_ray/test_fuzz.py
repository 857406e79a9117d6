"""Property-based bad input for actions: random, malformed, huge, deeply nested and unicode arguments always
get a result or a typed error, never a crash or a hang, and the agent keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from academy_ray import ActionArgumentError, ActionNotFoundError, Handle, PayloadError, Runtime
from tests.academy_ray.agents import Counter

pytestmark = pytest.mark.usefixtures("local_ray")

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary(max_size=64),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def counter() -> Iterator[Handle[Counter]]:
    rt = Runtime(namespace="fuzz-actions", placement=False)
    handle = rt.sync.launch(Counter, name="fuzzed", get_if_exists=True)
    yield handle.with_timeout(30)
    rt.sync.stop("fuzzed")


def _outcome(call: Any) -> str:
    try:
        call()
    except ActionArgumentError as error:
        assert error.parameter is None or error.parameter in str(error)
        return "rejected"
    except (PayloadError, ActionNotFoundError):
        return "refused"
    return "ok"


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_like)
def test_typed_action_accepts_only_what_validates(counter: Handle[Counter], value: Any) -> None:
    before = counter.sync.get()
    outcome = _outcome(lambda: counter.sync.add(value))
    after = counter.sync.get()
    if outcome == "rejected":
        assert after == before  # rejected before the action ran: state untouched
    else:
        assert outcome == "ok" and isinstance(after, int)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    args=st.lists(json_like, max_size=4),
    kwargs=st.dictionaries(st.text(max_size=12), json_like, max_size=3),
)
def test_random_signatures_and_models(
    counter: Handle[Counter], args: list[Any], kwargs: dict[str, Any]
) -> None:
    _outcome(lambda: counter.sync.norm(*args, **kwargs))
    _outcome(lambda: counter.sync.action("no_such_action", *args))
    assert isinstance(counter.sync.get(), int)  # still serving


def test_deep_nesting_and_huge_payloads_are_refused_before_sending(
    counter: Handle[Counter],
) -> None:
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(PayloadError, match="nested deeper"):
        counter.sync.add(deep)
    small = Handle(counter.name, counter.namespace, max_payload_bytes=1024)
    with pytest.raises(PayloadError, match="payload limit"):
        small.sync.echo(b"x" * 4096)
    assert small.sync.echo(b"x" * 100) == b"x" * 100
    assert isinstance(counter.sync.get(), int)
