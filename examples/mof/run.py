"""Command line of the MOF discovery pipeline: ``python -m examples.mof --budget 150 --out mof-out``."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from examples.common.progress import FunnelProgress
from examples.common.runtime import (
    add_common_arguments,
    checkpoint_uri,
    make_runtime,
    prepare_environment,
)
from examples.mof.pipeline import MofConfig, launch, run_until_done, stop_all
from examples.mof.records import FUNNEL
from examples.mof.report import print_summary, write_outputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.mof",
        description="MOF discovery: generate linkers, assemble, validate, estimate CO2 uptake.",
    )
    parser.add_argument("--budget", type=int, default=150, help="linkers to propose in all")
    parser.add_argument("--retrain-every", type=int, default=10, help="scores between retrains")
    parser.add_argument("--insertions", type=int, default=2000, help="Widom insertions per MOF")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=10, help="rows of the top-k table")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many s")
    parser.add_argument(
        "--keep-agents", action="store_true", help="leave the agents running at the end"
    )
    add_common_arguments(parser, default_out="mof-out")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    """Runs the pipeline to the end of its budget and writes the results."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rt = make_runtime(
        args.address, args.namespace, checkpoint_uri(out, args.checkpoint), args.num_cpus, "mof"
    )
    try:
        config = MofConfig(
            budget=args.budget,
            retrain_every=args.retrain_every,
            insertions=args.insertions,
            seed=args.seed,
        )
        print(f"namespace {rt.namespace}; checkpoints in {checkpoint_uri(out, args.checkpoint)}")
        handles = await launch(rt, config)
        with FunnelProgress(FUNNEL, config.budget, quiet=args.quiet) as bars:
            progress = await run_until_done(
                handles,
                timeout=args.timeout,
                on_progress=lambda p: bars.update(
                    p.funnel,
                    note=f"queues {p.queues} retrains {p.funnel.get('retrains', 0)}",
                ),
            )
        export = await handles.database.export()
        summary = write_outputs(export, out, args.top, elapsed_s=time.monotonic() - started)
        summary["namespace"] = rt.namespace
        summary["assembler_throttled"] = progress.throttles
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print_summary(summary, export, out, args.top)
        if not args.keep_agents:
            await stop_all(rt)
        return summary
    finally:
        rt.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m examples.mof``."""
    prepare_environment()
    asyncio.run(main_async(parse_args(argv)))
