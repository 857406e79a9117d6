"""Polling helpers shared by the academy_ray tests."""

from __future__ import annotations

import asyncio

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
