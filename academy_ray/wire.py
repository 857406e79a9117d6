"""How an action call travels to its host through Ray: one bytes object when it is small, plain data.

Ray serializes each argument of an actor call on its own, and passes a top-level ``bytes`` argument without
pickling it; every other argument costs it a serialization with its own metadata. An action call is
``(agent, action, args, kwargs)``: sent spread out as ``agent_call(agent, action, *args, **kwargs)`` that is
three or more serialized objects for a one-argument action. `pack_call` pickles a call made of plain built-in
data (bytes, str, numbers, lists, tuples, dicts, sets) of at most `PACK_LIMIT_BYTES` into one ``bytes`` object
instead, which the host unpacks (`unpack_call`): one serialization each way, as for a plain Ray call.

Everything else goes spread out, as Ray would send it: object references (Ray resolves top-level ones and
tracks nested ones), actor handles, arrays (zero-copy from Ray's object store), pydantic models and large
payloads. The host checks the unpacked call exactly as a spread one (payload bounds, validation).
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["PACK_LIMIT_BYTES", "pack_call", "unpack_call"]

PACK_LIMIT_BYTES = 64 * 1024
"""Largest call packed into one bytes object (larger ones go spread out, through Ray's object store)."""

MAX_PACKED_ITEMS = 4096
"""Most values a packed call may hold (the check walks them all)."""

_ATOMS = frozenset({bytes, bytearray, str, int, float, bool, complex, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset})


class _NotPlain(Exception):
    pass


class _Walk:
    """Counts the items and estimated bytes of a value made only of built-in data; raises `_NotPlain` else."""

    __slots__ = ("items", "size")

    def __init__(self) -> None:
        self.items = 0
        self.size = 0

    def add(self, value: Any) -> None:
        self.items += 1
        if self.items > MAX_PACKED_ITEMS:
            raise _NotPlain
        kind = type(value)
        if kind in _ATOMS:
            if kind is bytes or kind is str or kind is bytearray:
                self.size += len(value)
                if self.size > PACK_LIMIT_BYTES:
                    raise _NotPlain
            elif kind is int and not -(2**63) <= value < 2**63:
                raise _NotPlain  # big ints: leave them to Ray's own rules
            return
        if kind in _CONTAINERS:
            for item in value:
                self.add(item)
            return
        if kind is dict:
            for key, item in value.items():
                self.add(key)
                self.add(item)
            return
        raise _NotPlain


def pack_call(
    agent: str, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes | None:
    """The call as one bytes object for `unpack_call`; None when it must go spread out (see the module)."""
    walk = _Walk()
    try:
        for value in args:
            walk.add(value)
        for value in kwargs.values():
            walk.add(value)
    except (_NotPlain, RecursionError):
        return None
    return pickle.dumps((agent, action, args, kwargs), protocol=5)


def unpack_call(data: bytes) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """The ``(agent, action, args, kwargs)`` packed by `pack_call`."""
    agent, action, args, kwargs = pickle.loads(data)
    return agent, action, args, kwargs
