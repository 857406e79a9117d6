"""Reports the node model cache's contents into ``placement``'s inventory.

``placement`` owns the inventory (its controller actor, :mod:`placement.client`); the serving cache
only reports into it, keyed by model id with kind ``"model"``. Reporting is best effort and never
creates a controller: while none runs in the configured namespace, changes are remembered and
replayed once one appears.
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
    """Reports nowhere."""

    def held(self, node_id: str, key: str, nbytes: int) -> None:
        return None

    def evicted(self, node_id: str, key: str) -> None:
        return None


class PlacementSink:
    """Reports to the placement controller actor of ``namespace`` (fire and forget).

    Args:
        namespace: Ray namespace of the placement controller.
        name: its actor name (default ``placement.client.CONTROLLER_NAME``).
    """

    def __init__(self, namespace: str, name: str | None = None) -> None:
        self._namespace = namespace
        self._name = name
        self._client: Any = None
        self._held: dict[tuple[str, str], int] = {}

    def _controller(self) -> Any:
        if self._client is None:
            from placement import PlacementClient
            from placement.client import CONTROLLER_NAME

            self._client = PlacementClient.attach(self._namespace, self._name or CONTROLLER_NAME)
            if self._client is None:
                return None
            for (node_id, key), nbytes in self._held.items():  # replay what it missed
                self._client.report_nowait(node_id, key, nbytes, MODEL_KIND)
            return None  # the replay included the current change
        return self._client

    def held(self, node_id: str, key: str, nbytes: int) -> None:
        self._held[(node_id, key)] = nbytes
        try:
            client = self._controller()
            if client is not None:
                client.report_nowait(node_id, key, nbytes, MODEL_KIND)
        except Exception as exc:  # noqa: BLE001 - best effort by design
            logger.info("model cache inventory not reported to placement: %r", exc)
            self._client = None

    def evicted(self, node_id: str, key: str) -> None:
        self._held.pop((node_id, key), None)
        try:
            client = self._controller()
            if client is not None:
                client.forget_nowait(node_id, key)
        except Exception as exc:  # noqa: BLE001
            logger.info("model cache eviction not reported to placement: %r", exc)
            self._client = None
