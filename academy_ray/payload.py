"""Bounds on what a caller may send to an agent: total size and nesting depth, checked before sending."""

from __future__ import annotations

import os
import sys
from typing import Any

from academy_ray.exception import PayloadError

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "MAX_NESTING_DEPTH", "PayloadError", "check_payload"]

DEFAULT_MAX_PAYLOAD_BYTES = int(os.environ.get("ACADEMY_RAY_MAX_PAYLOAD_BYTES", str(1 << 30)))
"""Default limit of one call's arguments (1 GiB; ``$ACADEMY_RAY_MAX_PAYLOAD_BYTES`` overrides)."""

MAX_NESTING_DEPTH = 64
"""Deepest nesting of containers accepted in arguments (deeper ones would exhaust the serializer's stack)."""


def check_payload(
    agent: str, action: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int
) -> None:
    """Estimates the size of the arguments (without serializing them) and checks the bounds.

    Buffers (bytes, str, numpy arrays, Arrow tables) count their exact size, other objects their shallow size.

    Raises:
        PayloadError: Over ``limit`` bytes or nested deeper than `MAX_NESTING_DEPTH`.
    """
    budget = _Budget(limit)
    try:
        budget.add(args, 0)
        budget.add(kwargs, 0)
    except _Exceeded as exceeded:
        raise PayloadError(f"call of {action!r} on agent {agent!r}: {exceeded}") from None


class _Exceeded(Exception):
    pass


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def _count(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise _Exceeded(f"arguments exceed the payload limit of {self.limit:,} bytes")

    def add(self, value: Any, depth: int) -> None:
        if depth > MAX_NESTING_DEPTH:
            raise _Exceeded(f"arguments are nested deeper than {MAX_NESTING_DEPTH} levels")
        if isinstance(value, (bytes, bytearray, str)):
            self._count(len(value))
        elif isinstance(value, memoryview):
            self._count(value.nbytes)
        elif isinstance(value, (list, tuple, set, frozenset)):
            self._count(sys.getsizeof(value))
            for item in value:
                self.add(item, depth + 1)
        elif isinstance(value, dict):
            self._count(sys.getsizeof(value))
            for key, item in value.items():
                self.add(key, depth + 1)
                self.add(item, depth + 1)
        else:
            nbytes = getattr(value, "nbytes", None)
            self._count(nbytes if isinstance(nbytes, int) else sys.getsizeof(value))
            fields = getattr(value, "__pydantic_fields__", None)
            if fields is not None:
                for name in fields:
                    self.add(getattr(value, name, None), depth + 1)
