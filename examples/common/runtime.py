"""Connecting an example to Ray: embedded by default, a cluster with ``--address``, a job inside one."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from academy_ray import Runtime

T = TypeVar("T")


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Adds the flags every example takes: output dir, address, namespace, checkpoint store, CPUs."""
    parser.add_argument("--out", default=default_out, help="output directory (created)")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray address: none starts an embedded Ray (or joins $RAY_ADDRESS inside a job); "
        "'auto' joins a local `ray start` cluster",
    )
    parser.add_argument(
        "--namespace", default=None, help="Ray namespace of the agents (default: a fresh one)"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="fsspec URI of the checkpoint store (default: file://<out>/checkpoints)",
    )
    parser.add_argument(
        "--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (ignored on a cluster)"
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress display")


def prepare_environment() -> None:
    """Environment a pipeline needs before Ray starts its workers.

    * one BLAS thread per process (ASE and numpy on a small machine otherwise oversubscribe cores);
    * Ray 2.60 turns on token authentication when ``~/.ray/auth_token`` exists: clients must then say so.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if (Path.home() / ".ray" / "auth_token").exists():
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def checkpoint_uri(out: Path, given: str | None) -> str:
    """The checkpoint store: ``given`` or a folder inside the output directory."""
    if given:
        return given
    folder = (out / "checkpoints").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def make_runtime(
    address: str | None, namespace: str | None, checkpoint: str, num_cpus: int, prefix: str
) -> Runtime:
    """A `Runtime` on an embedded Ray (``address`` None, outside a job) or on the given cluster."""
    from academy_ray import Runtime

    embedded = address is None and not os.environ.get("RAY_ADDRESS")
    init_kwargs: dict[str, Any] = {"log_to_driver": False}
    if embedded:
        # Workers of an embedded Ray inherit this process's environment (see `prepare_environment`).
        init_kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    return Runtime(
        address,
        namespace=namespace or f"{prefix}-{uuid.uuid4().hex[:8]}",
        init_kwargs=init_kwargs,
        checkpoint=checkpoint,
    )


async def retry(
    call: Callable[..., Awaitable[T]],
    *args: Any,
    attempts: int = 200,
    delay: float = 0.1,
    not_found_s: float = 60.0,
    **kwargs: Any,
) -> T:
    """Calls an agent action, retrying while the agent or the checkpoint storage is away.

    Retried: `AgentUnavailableError` (the agent's process is restarting), `StorageUnavailableError` (the
    action ran but its new state is not durable yet: the storage is down) and, for at most
    ``not_found_s`` seconds, `AgentNotFoundError` (the agent's node was lost and placement is creating it
    again elsewhere: its name is briefly free). Every action the examples send is idempotent, so a retry
    after a lost reply never double counts.

    Raises:
        AgentUnavailableError: The agent did not come back within ``attempts`` tries.
        StorageUnavailableError: The storage did not come back within ``attempts`` tries.
        AgentNotFoundError: The agent stayed missing for ``not_found_s`` seconds.
    """
    from academy_ray import AgentNotFoundError, AgentUnavailableError
    from academy_ray.store import StorageUnavailableError

    missing_since: float | None = None
    for attempt in range(attempts):
        try:
            return await call(*args, **kwargs)
        except (AgentUnavailableError, StorageUnavailableError):
            if attempt == attempts - 1:
                raise
        except AgentNotFoundError:
            now = time.monotonic()
            missing_since = now if missing_since is None else missing_since
            if attempt == attempts - 1 or now - missing_since > not_found_s:
                raise
        await asyncio.sleep(min(delay * (1 + attempt), 1.0))
    raise AssertionError("unreachable")
