"""Ray-free serving policy, shared by the real Serve app and the simulator (:mod:`serving.sim`).

* :class:`DemandTracker`: each model's request rate, requests in flight and recent latency.
* :class:`Router`: which replica serves a request (resident > loading > parked > node disk >
  object storage, then queue length) and what it evicts.
* :class:`ReplicaManager`: how many copies of each model (hot models on more replicas, cold ones
  consolidated, never the last copy of a model with recent traffic); :func:`desired_replicas`:
  how many replicas in all.
* :class:`ReplicaScaler`: when the deployment gains a replica and which one it drains.
"""

from __future__ import annotations

from serving.policy.demand import DemandTracker, LiveDemand, ModelDemand
from serving.policy.manager import Eviction, Plan, ReplicaManager, desired_replicas
from serving.policy.router import Route, Router, evictable, new_copy, victims
from serving.policy.scaler import ReplicaScaler, ScaleStep
from serving.policy.view import ClusterView, ModelTargets, ReplicaView, Tier

__all__ = [
    "ClusterView",
    "DemandTracker",
    "LiveDemand",
    "Eviction",
    "ModelDemand",
    "ModelTargets",
    "Plan",
    "ReplicaManager",
    "ReplicaScaler",
    "ReplicaView",
    "Route",
    "Router",
    "ScaleStep",
    "Tier",
    "desired_replicas",
    "evictable",
    "new_copy",
    "victims",
]
