"""placement: where agents and model replicas run (see shared/DESIGN.md, "placement").

Locality- and GPU-aware choice of node, reserved with a Ray placement group pinned to that node,
with re-placement on node loss and a discrete-event simulator (:mod:`placement.sim`).
"""

from __future__ import annotations

from placement.demand import Demand
from placement.inventory import Inventory, InventoryItem, ItemKind

__all__ = ["Demand", "Inventory", "InventoryItem", "ItemKind"]
