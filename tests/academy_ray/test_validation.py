"""Action argument validation (pydantic), without Ray."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from academy_ray import ActionArgumentError
from academy_ray.validation import ActionValidator
from tests.academy_ray.agents import Point


async def typed(
    self: Any, n: int, point: Point, *values: float, tag: str = "t", **extra: int
) -> None:
    """An action-shaped function with every kind of parameter."""


async def untyped(self, a, b=2):  # type: ignore[no-untyped-def]
    """No annotations at all."""


async def arrays(self: Any, data: np.ndarray, anything: Any) -> None:
    """Arbitrary types are checked by isinstance."""


@pytest.fixture
def validator() -> ActionValidator:
    return ActionValidator("agent", "typed", typed)


def test_valid_call_is_coerced(validator: ActionValidator) -> None:
    args, kwargs = validator(None, ("5", {"x": 1, "y": 2}, 1, "2.5"), {"tag": "x", "k": "3"})
    assert args[0] == 5 and isinstance(args[1], Point) and args[2:] == (1.0, 2.5)
    assert kwargs == {"tag": "x", "k": 3}


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter"),
    [
        (("five", {"x": 1, "y": 2}), {}, "n"),
        ((1, {"x": 1}), {}, "point"),
        ((1, {"x": 1, "y": 2}, "not-a-float"), {}, "values"),
        ((1, {"x": 1, "y": 2}), {"tag": 5}, "tag"),
        ((1, {"x": 1, "y": 2}), {"k": "many"}, "extra"),
        ((), {}, "n"),
    ],
)
def test_each_bad_call_names_the_parameter(
    validator: ActionValidator, args: tuple[Any, ...], kwargs: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ActionArgumentError) as caught:
        validator(None, args, kwargs)
    assert caught.value.parameter == parameter
    assert "typed" in str(caught.value) and parameter in str(caught.value)


def test_unannotated_checks_arity_only() -> None:
    validator = ActionValidator("agent", "untyped", untyped)
    assert validator(None, ("anything",), {}) == (("anything",), {})
    with pytest.raises(ActionArgumentError, match="too many"):
        validator(None, (1, 2, 3), {})


def test_arbitrary_types_use_isinstance() -> None:
    validator = ActionValidator("agent", "arrays", arrays)
    data = np.arange(3)
    args, _ = validator(None, (data, object()), {})
    assert args[0] is data
    with pytest.raises(ActionArgumentError) as caught:
        validator(None, ([1, 2, 3], None), {})
    assert caught.value.parameter == "data"
