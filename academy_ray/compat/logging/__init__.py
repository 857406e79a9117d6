"""Academy's ``academy.logging``: `recommended_logging` configures Python logging in the driver."""

from __future__ import annotations

from academy_ray.compat.logging.recommended import recommended_logging

__all__ = ["recommended_logging"]
