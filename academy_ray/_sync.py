"""Runs coroutines to completion from blocking code (scripts, notebooks) on one background event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="academy-ray-sync", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs ``coroutine`` on the shared background loop and blocks until it returns.

    Works whether or not the calling thread already runs an event loop (as Jupyter's does).
    """
    return asyncio.run_coroutine_threadsafe(coroutine, _background_loop()).result()
