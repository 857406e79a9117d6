"""Polling helpers shared by the academy_ray tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from academy_ray import AgentNotFoundError, Runtime


async def wait_name_freed(rt: Runtime, name: str, why: str, timeout: float = 5.0) -> None:
    """Waits until no agent named ``name`` can be found; fails the test with ``why`` otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            rt.get(name)
        except AgentNotFoundError:
            return
        await asyncio.sleep(0.1)
    pytest.fail(why)


async def until(probe: Callable[[], Awaitable[bool]], why: str, timeout: float = 30.0) -> None:
    """Waits until ``probe()`` holds (asked every 0.05 s); fails the test with ``why`` otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(why)
        await asyncio.sleep(0.05)
