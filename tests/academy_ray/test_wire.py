"""Calls packed into one bytes object for Ray, and the ones that must go spread out."""

from __future__ import annotations

import numpy as np

from academy_ray.wire import MAX_PACKED_ITEMS, PACK_LIMIT_BYTES, pack_call, unpack_call
from tests.academy_ray.agents import Point


def test_small_plain_calls_round_trip_through_one_bytes_object() -> None:
    args = (b"x" * 1024, "text", 3, 2.5, None, [1, (2, 3)], {"k": {4, 5}})
    kwargs = {"flag": True, "big": 2**40}
    packed = pack_call("agent", "act", args, kwargs)
    assert isinstance(packed, bytes)
    assert unpack_call(packed) == ("agent", "act", args, kwargs)


def test_what_ray_must_see_goes_spread_out() -> None:
    assert pack_call("a", "b", (np.zeros(4),), {}) is None  # arrays: zero-copy through Ray
    assert pack_call("a", "b", (Point(x=1, y=2),), {}) is None  # models and other objects
    assert pack_call("a", "b", (), {"v": [Point(x=1, y=2)]}) is None  # nested too
    assert pack_call("a", "b", (b"x" * (PACK_LIMIT_BYTES + 1),), {}) is None  # large payloads
    assert pack_call("a", "b", (list(range(MAX_PACKED_ITEMS + 1)),), {}) is None
    assert pack_call("a", "b", (2**70,), {}) is None
