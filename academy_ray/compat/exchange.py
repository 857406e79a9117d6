"""Academy's ``academy.exchange`` factories, accepted and ignored: Ray carries academy_ray's calls.

A program keeps building its factory (``LocalExchangeFactory()``, ``RedisExchangeFactory(host, port)``, ...)
and passing it to `academy_ray.compat.Manager.from_exchange_factory`; its arguments are kept for ``repr`` only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ExchangeFactory",
    "HttpExchangeFactory",
    "HybridExchangeFactory",
    "LocalExchangeFactory",
    "RedisExchangeFactory",
]


class ExchangeFactory:
    """An exchange factory a program built for Academy; academy_ray needs none, so it does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ignored by academy_ray)"


class LocalExchangeFactory(ExchangeFactory):
    """Academy's in-process exchange (ignored)."""


class HttpExchangeFactory(ExchangeFactory):
    """Academy's HTTP exchange (ignored)."""


class RedisExchangeFactory(ExchangeFactory):
    """Academy's Redis exchange (ignored)."""


class HybridExchangeFactory(ExchangeFactory):
    """Academy's hybrid exchange (ignored)."""
