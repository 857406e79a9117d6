"""Demand validation and the Ray bundle it reserves."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from placement import Demand


def test_bundle_and_keys() -> None:
    d = Demand(
        name="a",
        cpus=2,
        gpus=1,
        gpu_type="A100",
        memory_bytes=10,
        resources={"slot": 1, "zero": 0},
        data_uris=("s3://x",),
        model_ids=("m",),
        checkpoint_key="ckpt:a",
    )
    assert d.bundle() == {"CPU": 2, "GPU": 1, "memory": 10.0, "slot": 1}
    assert d.locality_keys() == ("s3://x", "m", "ckpt:a")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cpus": 0}, "must request some resource"),
        ({"gpu_type": "A100"}, "gpu_type is set but gpus is 0"),
        ({"resources": {"GPU": 1}}, "use the cpus/gpus/memory_bytes fields"),
        ({"resources": {"slot": -1}}, "must be >= 0"),
        ({"cpus": -1}, "greater than or equal"),
        ({"name": ""}, "at least 1 character"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_bad_demands_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Demand(**{"name": "a", **kwargs})


def test_demand_is_frozen_and_roundtrips() -> None:
    d = Demand(name="a", data_uris=("u",))
    with pytest.raises(ValidationError):
        d.cpus = 3  # type: ignore[misc]
    assert Demand.model_validate_json(d.model_dump_json()) == d
