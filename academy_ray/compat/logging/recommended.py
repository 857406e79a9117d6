"""Academy's ``academy.logging.recommended``."""

from __future__ import annotations

import logging
import pathlib

__all__ = ["recommended_logging"]


def recommended_logging(
    level: int | str = logging.INFO,
    *,
    logfile: str | pathlib.Path | None = None,
    logfile_level: int | str | None = None,
    color: bool = True,
    extra: int = False,
) -> None:
    """Configures the driver's Python logging as Academy's recommended config would (console, optional file).

    Like `logging.basicConfig`, it leaves a logging set-up that already has handlers as it is.

    Agents log in their own Ray worker processes (read them with ``academy-ray logs NAME``), so there is no
    config object to carry to them: this returns None, which `academy_ray.compat.Manager` accepts.
    """
    del color, extra
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logfile is not None:
        handler = logging.FileHandler(logfile)
        handler.setLevel(level if logfile_level is None else logfile_level)
        logging.getLogger().addHandler(handler)
