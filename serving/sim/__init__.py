"""serving.sim: replays a request trace against N GPUs and M models with measured costs.

It runs the same :class:`~serving.policy.Router` and :class:`~serving.policy.ReplicaManager` as
the real app, on the same :class:`~serving.policy.ClusterView` (no Ray involved), beside two
baselines: Serve's multiplexing as it is and static partitioning.

* :mod:`serving.sim.costs`: the cost of each step and where each figure comes from.
* :mod:`serving.sim.workload`: the 64-model mix, Zipf popularity, bursty traces.
* :mod:`serving.sim.engine`: the event loop and the measurements.
* :mod:`serving.sim.policies`: ours, Serve's multiplexing, static partitioning.
"""

from __future__ import annotations

from serving.sim.costs import Costs
from serving.sim.engine import SimConfig, SimResult, Simulation
from serving.sim.policies import OursPolicy, ServeMultiplexPolicy, StaticPolicy
from serving.sim.workload import MIX, SimModel, Trace, bursty_trace, model_mix

__all__ = [
    "MIX",
    "Costs",
    "OursPolicy",
    "ServeMultiplexPolicy",
    "SimConfig",
    "SimModel",
    "SimResult",
    "Simulation",
    "StaticPolicy",
    "Trace",
    "bursty_trace",
    "model_mix",
]
