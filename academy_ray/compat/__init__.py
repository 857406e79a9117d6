"""Academy 1.0 (academy-py) programs on academy_ray, with only their imports changed.

Each module here stands for the Academy module of the same name, so porting a program is replacing
``academy.`` with ``academy_ray.compat.`` in its imports (or importing everything from this package):

=========================================  =================================================
Academy 1.0                                 academy_ray
=========================================  =================================================
``academy.agent``: ``Agent``, ``action``,   `academy_ray.compat.agent` (academy_ray's own
``loop``, ``event``, ``timer``              decorators; ``Agent`` adds ``agent_id``)
``academy.handle.Handle``                   `academy_ray.compat.handle.Handle`
``academy.manager.Manager``                 `academy_ray.compat.manager.Manager`, backed by a
                                            `academy_ray.Runtime`
``academy.exchange.*ExchangeFactory``       accepted and ignored (Ray carries the messages)
``academy.logging.recommended``             `academy_ray.compat.logging.recommended`
``academy.exception``                       `academy_ray.compat.exception`
=========================================  =================================================

What differs (see each class): agents are detached Ray actors in the namespace of the manager's runtime
(``$ACADEMY_RAY_NAMESPACE`` or ``"academy"``), so an agent's ``name`` must be unique there and an agent id is
its name; executors and exchanges are ignored (give ``resources=``, ``pool=``, ``checkpoint=`` to
`Manager.launch` instead); a handle's ``shutdown`` asks the agent to stop, like Academy's, and
``Manager.shutdown(blocking=True)`` waits until its process has gone.
"""

from __future__ import annotations

from academy_ray.compat.agent import Agent, action, event, loop, timer
from academy_ray.compat.exception import AgentExitError, AgentTerminatedError, BadEntityIdError
from academy_ray.compat.exchange import (
    ExchangeFactory,
    HttpExchangeFactory,
    HybridExchangeFactory,
    LocalExchangeFactory,
    RedisExchangeFactory,
)
from academy_ray.compat.handle import Handle
from academy_ray.compat.logging.recommended import recommended_logging
from academy_ray.compat.manager import Manager

__all__ = [
    "Agent",
    "AgentExitError",
    "AgentTerminatedError",
    "BadEntityIdError",
    "ExchangeFactory",
    "Handle",
    "HttpExchangeFactory",
    "HybridExchangeFactory",
    "LocalExchangeFactory",
    "Manager",
    "RedisExchangeFactory",
    "action",
    "event",
    "loop",
    "recommended_logging",
    "timer",
]
