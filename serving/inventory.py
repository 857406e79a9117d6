"""Adapter that reports the node model cache's contents to ``placement``'s inventory.

``placement`` owns the inventory; the serving cache only reports into it. Reporting is best effort:
a missing placement controller must never break serving, so failures are logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MODEL_KIND = "model"


class InventorySink(Protocol):
    """Where cache inventory changes go."""

    def held(self, node_id: str, key: str, nbytes: int) -> None:
        """``node_id`` now holds ``key`` (model weights) of ``nbytes`` bytes."""

    def evicted(self, node_id: str, key: str) -> None:
        """``node_id`` no longer holds ``key``."""


class NullSink:
    """Reports nowhere (used when placement is not running)."""

    def held(self, node_id: str, key: str, nbytes: int) -> None:  # noqa: D102
        return None

    def evicted(self, node_id: str, key: str) -> None:  # noqa: D102
        return None


class PlacementSink:
    """Reports through ``placement.client.PlacementClient`` when it exists and answers.

    The client is created lazily on first use so a cache can start before the placement
    controller; every failure is logged once and ignored.
    """

    def __init__(self) -> None:
        self._client: Any = None
        self._warned = False

    def _get(self) -> Any:
        if self._client is None:
            from placement.client import PlacementClient  # type: ignore[import-not-found]

            self._client = PlacementClient()
        return self._client

    def _call(self, method: str, *args: Any) -> None:
        try:
            func = getattr(self._get(), method, None)
            if func is not None:
                func(*args)
        except Exception as exc:  # noqa: BLE001 - best effort by design
            if not self._warned:
                logger.info("model cache inventory not reported to placement: %r", exc)
                self._warned = True

    def held(self, node_id: str, key: str, nbytes: int) -> None:  # noqa: D102
        self._call("report", node_id, key, nbytes, MODEL_KIND)

    def evicted(self, node_id: str, key: str) -> None:  # noqa: D102
        self._call("forget", node_id, key)
