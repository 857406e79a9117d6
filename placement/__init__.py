"""placement: where agents and model replicas run (see docs/architecture.md).

Locality- and GPU-aware choice of node, reserved with a Ray placement group pinned to that node,
with queueing, re-placement on node loss and a discrete-event simulator (:mod:`placement.sim`).

Main entry points: :class:`PlacementClient` (driver side, talks to the detached controller actor),
:class:`Demand`, :class:`Decision`, :class:`Inventory`, :class:`Scheduler` and the policies.
"""

from __future__ import annotations

from placement.client import CONTROLLER_NAME, PlacementClient
from placement.cluster import ClusterView, NodeInfo
from placement.controller import Launcher, PlacementController
from placement.decision import Decision
from placement.demand import Demand
from placement.errors import (
    InfeasibleDemandError,
    NoCapacityError,
    PlacementError,
    PlacementTimeoutError,
    UnknownPlacementError,
)
from placement.failure_detection import (
    FAILURE_DETECTION,
    ray_start_environment,
    with_failure_detection,
)
from placement.inventory import Inventory, InventoryItem, ItemKind
from placement.policy import (
    Candidate,
    LocalityPolicy,
    LocalityWeights,
    Policy,
    RandomPolicy,
    RayDefaultPolicy,
    SpreadPolicy,
    make_policy,
)
from placement.scheduler import Scheduler
from placement.table import NodeTable

__all__ = [
    "CONTROLLER_NAME",
    "FAILURE_DETECTION",
    "Candidate",
    "ClusterView",
    "Decision",
    "Demand",
    "InfeasibleDemandError",
    "Inventory",
    "InventoryItem",
    "ItemKind",
    "Launcher",
    "LocalityPolicy",
    "LocalityWeights",
    "NoCapacityError",
    "NodeInfo",
    "NodeTable",
    "PlacementClient",
    "PlacementController",
    "PlacementError",
    "PlacementTimeoutError",
    "Policy",
    "RandomPolicy",
    "RayDefaultPolicy",
    "Scheduler",
    "SpreadPolicy",
    "UnknownPlacementError",
    "make_policy",
    "ray_start_environment",
    "with_failure_detection",
]
