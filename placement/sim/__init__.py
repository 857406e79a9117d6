"""placement.sim: a discrete-event simulator of 1,000-10,000 nodes for comparing placement policies.

It drives the *same* :class:`~placement.policy.Policy` classes and the same
:func:`~placement.core.choose` as the real scheduler, on a :class:`~placement.table.NodeTable` and an
:class:`~placement.inventory.Inventory` that it updates itself (no Ray involved).

* :mod:`placement.sim.cluster`: build a cluster of CPU and GPU nodes with data sets on them.
* :mod:`placement.sim.traces`: a Globus-Compute-shaped trace, a long-lived stateful-agent trace and
  model replicas with tensor-parallel sizes.
* :mod:`placement.sim.engine`: the event loop and the metrics.
"""

from __future__ import annotations

from placement.sim.cluster import ClusterSpec, build_cluster
from placement.sim.engine import Metrics, simulate
from placement.sim.traces import (
    Activation,
    Trace,
    globus_trace,
    model_replica_trace,
    stateful_trace,
)

__all__ = [
    "Activation",
    "ClusterSpec",
    "Metrics",
    "Trace",
    "build_cluster",
    "globus_trace",
    "model_replica_trace",
    "simulate",
    "stateful_trace",
]
