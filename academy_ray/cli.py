"""The ``academy-ray`` command: list agents, call an action, stop an agent, manage checkpoints, explain placement,
watch agents (``top``) and read their logs (``logs``).

It joins a running Ray cluster (``--address``, default ``$RAY_ADDRESS`` or the local ``ray start`` cluster):
agents are detached actors, so they are there to be found from any shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from academy_ray.checkpoint import CheckpointPolicy
from academy_ray.exception import AgentError
from academy_ray.handle import lookup_actor
from academy_ray.runtime import Runtime, default_namespace
from academy_ray.store import AgentCheckpoints, CheckpointError
from academy_ray.watch import AgentLog, Sampler, top_table

console = Console()
Command = Callable[[Runtime, argparse.Namespace], Any]
_COMMANDS: dict[str, Command] = {}


def _command(name: str) -> Callable[[Command], Command]:
    def register(function: Command) -> Command:
        _COMMANDS[name] = function
        return function

    return register


@_command("list")
async def _list(rt: Runtime, options: argparse.Namespace) -> None:
    infos = await rt.list()
    if options.json:
        print(json.dumps([info.model_dump(mode="json") for info in infos]))
        return
    table = Table(title=f"agents in namespace {rt.namespace!r}")
    for column in ("name", "class", "status", "node", "pid", "since", "error"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            info.agent_class,
            info.status,
            (info.node_id or "")[:12],
            str(info.pid or ""),
            info.since.isoformat(timespec="seconds") if info.since else "",
            info.error or "",
        )
    console.print(table)


@_command("call")
async def _call(rt: Runtime, options: argparse.Namespace) -> None:
    args = json.loads(options.args)
    kwargs = json.loads(options.kwargs)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise SystemExit("--args must be a JSON list and --kwargs a JSON object")
    handle = rt.get(options.name).with_timeout(options.timeout)
    result = await handle.action(options.action, *args, **kwargs)
    print(json.dumps(result, default=_jsonable))


@_command("stop")
async def _stop(rt: Runtime, options: argparse.Namespace) -> None:
    await rt.stop(options.name, timeout=options.timeout)
    console.print(f"stopped {options.name}")


async def _store_of(rt: Runtime, options: argparse.Namespace) -> AgentCheckpoints:
    uri = options.uri
    if uri is None:
        try:
            info = await rt.get(options.name).info()
        except AgentError:
            raise SystemExit(
                f"agent {options.name!r} is not running: give its store with --uri"
            ) from None
        uri = info.checkpoint_uri
        if uri is None:
            raise SystemExit(f"agent {options.name!r} has no checkpoint policy")
    policy = CheckpointPolicy(uri=uri, storage_options=json.loads(options.storage_options))
    return rt.checkpoints(options.name, policy)


@_command("checkpoints")
async def _checkpoints(rt: Runtime, options: argparse.Namespace) -> None:
    store = await _store_of(rt, options)
    table = Table(title=f"checkpoints of {options.name!r} in {store.store.uri}")
    for column in ("seq", "epoch", "created", "size", "fields", "fenced", "note"):
        table.add_column(column)
    for info in await asyncio.to_thread(store.list):
        rolled = info.extra.get("rollback_of")
        table.add_row(
            str(info.seq),
            str(info.epoch),
            info.created.isoformat(timespec="seconds"),
            f"{info.size:,}",
            ", ".join(f"{k}:{v}" for k, v in info.schema.items()),
            "yes" if info.fenced else "",
            f"rollback of {rolled}" if rolled is not None else "",
        )
    console.print(table)


@_command("inspect")
async def _inspect(rt: Runtime, options: argparse.Namespace) -> None:
    store = await _store_of(rt, options)
    info = await asyncio.to_thread(store.info, options.seq)
    fields = await asyncio.to_thread(store.load, options.seq)
    print(
        json.dumps(
            {
                "manifest": info.model_dump(mode="json", by_alias=True),
                "fields": {name: _summary(value) for name, value in fields.items()},
            },
            indent=2,
        )
    )


@_command("rollback")
async def _rollback(rt: Runtime, options: argparse.Namespace) -> None:
    policy = None
    if options.uri is not None:
        policy = CheckpointPolicy(
            uri=options.uri, storage_options=json.loads(options.storage_options)
        )
    info = await rt.rollback(options.name, options.seq, policy)
    console.print(
        f"{options.name}: checkpoint {options.seq} is the newest again (as seq {info.seq})"
    )


@_command("explain")
async def _explain(rt: Runtime, options: argparse.Namespace) -> None:
    decision = await rt.explain(options.name)
    if decision is None:
        waiting = [demand for demand in await rt.pending() if demand.name == options.name]
        if waiting:
            console.print(
                f"{options.name}: waiting for room in the cluster ({waiting[0].bundle()})"
            )
            return
        raise SystemExit(
            f"no placement decision for {options.name!r} in namespace {rt.namespace!r}"
        )
    if options.json:
        print(decision.model_dump_json(indent=2))
        return
    console.print(decision.explain(), markup=False, highlight=False)


@_command("top")
async def _top(rt: Runtime, options: argparse.Namespace) -> None:
    sampler = Sampler(rt, concurrency=options.concurrency)
    if options.once:
        console.print(top_table(rt.namespace, await sampler.sample()))
        return
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            live.update(top_table(rt.namespace, await sampler.sample()), refresh=True)
            await asyncio.sleep(options.interval)


@_command("logs")
async def _logs(rt: Runtime, options: argparse.Namespace) -> None:
    actor = lookup_actor(options.name, rt.namespace)
    log = AgentLog(actor, stream=options.stream)
    running = asyncio.get_running_loop()
    finished: asyncio.Future[None] = running.create_future()

    def settle(error: BaseException | None) -> None:
        if not finished.done():
            if error is None:
                finished.set_result(None)
            else:
                finished.set_exception(error)

    def show() -> None:
        error: BaseException | None = None
        try:
            for line in log.lines(tail=options.tail, follow=options.follow):
                print(line, flush=True)
        except BaseException as raised:  # noqa: BLE001 - handed to the command
            error = raised
        with contextlib.suppress(
            RuntimeError
        ):  # the command has ended (Ctrl-C): its loop is closed
            running.call_soon_threadsafe(settle, error)

    # A daemon thread reads (it blocks): Ctrl-C ends the command at once, and the thread with the process.
    threading.Thread(target=show, name="academy-ray-logs", daemon=True).start()
    await finished


def _summary(value: Any) -> Any:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"array shape={tuple(shape)} dtype={getattr(value, 'dtype', '?')}"
    num_rows = getattr(value, "num_rows", None)
    if num_rows is not None:
        return f"table rows={num_rows} columns={list(value.column_names)}"
    if isinstance(value, bytes):
        return f"bytes len={len(value)}"
    text = json.dumps(value, default=repr)
    return value if len(text) <= 2000 else text[:2000] + "..."


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    return repr(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``academy-ray`` command."""
    parser = argparse.ArgumentParser(prog="academy-ray", description=__doc__)
    parser.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS", "auto"), help="Ray cluster"
    )
    parser.add_argument("--namespace", default=default_namespace(), help="agents' Ray namespace")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="agents with status, node and since when")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    call = sub.add_parser("call", help="call an action and print its result as JSON")
    call.add_argument("name")
    call.add_argument("action")
    call.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    call.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    call.add_argument("--timeout", type=float, default=60.0)
    stop = sub.add_parser("stop", help="shut an agent down gracefully")
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float, default=30.0)
    explain = sub.add_parser("explain", help="why an agent runs on its node (placement decision)")
    explain.add_argument("name")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    top = sub.add_parser("top", help="a live table of the agents: calls, latency, checkpoints")
    top.add_argument(
        "--once", action="store_true", help="print one frame and exit (no calls/s: that needs two)"
    )
    top.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top.add_argument(
        "--concurrency", type=int, default=32, help="hosts asked at once (each within 5 s)"
    )
    logs = sub.add_parser("logs", help="print an agent's log lines (its host process's log)")
    logs.add_argument("name")
    logs.add_argument("--tail", type=int, default=1000, help="last N lines (-1: all)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "--stream",
        choices=("err", "out"),
        default="err",
        help="err: Python logging (default); out: print() output",
    )
    checkpoints = sub.add_parser("checkpoints", help="list an agent's checkpoints (running or not)")
    inspect = sub.add_parser("inspect", help="show one checkpoint's manifest and fields")
    rollback = sub.add_parser(
        "rollback", help="make an older checkpoint the newest (restores a running agent)"
    )
    for command in (checkpoints, inspect, rollback):
        command.add_argument("name")
        if command is not checkpoints:
            command.add_argument("seq", type=int)
        command.add_argument("--uri", help="checkpoint store URI (default: the running agent's)")
        command.add_argument(
            "--storage-options", default="{}", help="fsspec options as a JSON object"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``academy-ray`` command; returns the exit status."""
    options = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rt = Runtime(
        address=options.address,
        namespace=options.namespace,
        init_kwargs={"logging_level": "ERROR", "log_to_driver": False},
    )
    try:
        asyncio.run(_COMMANDS[options.command](rt, options))
    except (AgentError, CheckpointError, json.JSONDecodeError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    except KeyboardInterrupt:  # the way out of `top` and `logs --follow`
        return 130
    except Exception as error:  # noqa: BLE001 - an action's own exception: show it, exit non-zero
        console.print(f"[red]{type(error).__name__}:[/red] {error}")
        for note in getattr(error, "__notes__", []):
            console.print(note, markup=False)
        return 1
    finally:
        rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
