"""Typed errors raised by the placement package."""

from __future__ import annotations


class PlacementError(Exception):
    """Base class of placement errors."""


class InfeasibleDemandError(PlacementError):
    """No node of the cluster could ever fit the demand (even empty). The message says why."""


class NoCapacityError(PlacementError):
    """The demand is feasible but no live node has room for it right now (callers may queue)."""


class PlacementTimeoutError(PlacementError):
    """A queued demand was not placed, or its placement group not ready, before the deadline."""


class UnknownPlacementError(PlacementError, KeyError):
    """No decision is recorded under that name."""


class SecretsUnavailableError(PlacementError):
    """A journaled launcher's secret values (kept out of the journal) cannot be found.

    Raised when a launcher adopted from the journal is called again (re-placement) and the
    secrets holder of its namespace is gone or no longer holds them: the launch fails rather than
    run with missing credentials. Place the demand again with its credentials.
    """
