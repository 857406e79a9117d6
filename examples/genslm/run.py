"""Command line of the GenSLM-style pipeline: ``python -m examples.genslm --rounds 4 --out genslm-out``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from examples.common.progress import FunnelProgress
from examples.common.runtime import (
    add_common_arguments,
    checkpoint_uri,
    make_runtime,
    prepare_environment,
    retry,
)
from examples.genslm.agents import FineTuning, Generation, SequenceAnalysis, User
from examples.genslm.report import FUNNEL, print_summary, write_outputs
from examples.genslm.serve import MODEL_ID, free_port, serve_codon_lm, train_and_publish, unserve

AGENTS = ("user", "generation", "analysis")
AGENT_CPUS = {"num_cpus": 0.1}

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.genslm",
        description="GenSLM-style design: sample genes from a served codon LM, analyse, keep the best.",
    )
    parser.add_argument("--rounds", type=int, default=4, help="generation rounds")
    parser.add_argument("--per-round", type=int, default=8, help="genes per round")
    parser.add_argument(
        "--temperatures",
        default="0.6,0.8,1.0,1.2",
        help="sampling temperature of each round (cycled)",
    )
    parser.add_argument("--threshold", type=float, default=0.8, help="identity of a promising gene")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the run")
    parser.add_argument(
        "--control",
        action="store_true",
        help="the control arm: never fine-tune (same seed, rounds and temperatures)",
    )
    parser.add_argument(
        "--fine-tune-steps",
        type=int,
        default=40,
        help="after each round, fine-tune the served codon LM on the promising genes so far "
        "for this many steps and serve the new version (0: never)",
    )
    parser.add_argument("--train-steps", type=int, default=300, help="codon LM training steps")
    parser.add_argument("--port", type=int, default=0, help="Serve HTTP port (0: a free one)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--keep-agents", action="store_true")
    add_common_arguments(parser, default_out="genslm-out")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Trains and serves the codon LM, runs the rounds, writes the results."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    temps = [float(t) for t in args.temperatures.split(",")]
    temperatures = [temps[i % len(temps)] for i in range(args.rounds)]
    rt = make_runtime(
        args.address, args.namespace, checkpoint_uri(out, args.checkpoint), args.num_cpus, "genslm"
    )
    config = None
    try:
        weights, training = await asyncio.to_thread(train_and_publish, out, args.train_steps)
        print(
            f"codon LM trained in {training['seconds']:.1f} s "
            f"(loss {training['first_loss']:.2f} -> {training['final_loss']:.2f}); weights {weights}"
        )
        app = f"genslm-{rt.namespace}"
        base_url, config = await asyncio.to_thread(
            serve_codon_lm,
            weights,
            app,
            out / "model-cache",
            args.port or free_port(),
            rt.namespace,
        )
        print(f"serving {MODEL_ID} at {base_url}; namespace {rt.namespace}")
        analysis = await rt.launch(
            SequenceAnalysis,
            kwargs={"threshold": args.threshold},
            name="analysis",
            resources=AGENT_CPUS,
            get_if_exists=True,
        )
        generation = await rt.launch(
            Generation,
            args=(base_url, MODEL_ID),
            kwargs={"seed": args.seed},
            name="generation",
            resources=AGENT_CPUS,
            models=[MODEL_ID],
            get_if_exists=True,
        )
        tuning = None
        if not args.control and args.fine_tune_steps > 0:
            tuning = FineTuning(weights_uri=weights, steps=args.fine_tune_steps)
        user = await rt.launch(
            User,
            args=(generation, analysis, temperatures),
            kwargs={"per_round": args.per_round, "fine_tuning": tuning},
            name="user",
            resources=AGENT_CPUS,
            get_if_exists=True,
        )
        total = args.rounds * args.per_round
        with FunnelProgress(FUNNEL, total, quiet=args.quiet) as bars:
            while True:
                status = await retry(user.status)
                counts = await retry(analysis.summary)
                bars.update(
                    counts,
                    note=f"round {status['rounds_done']}/{status['rounds']} "
                    f"best identity {counts['best_identity']:.2f}",
                )
                if status["finished"]:
                    break
                if time.monotonic() - started > args.timeout:
                    raise TimeoutError(f"GenSLM pipeline not done after {args.timeout} s")
                await asyncio.sleep(0.5)
        export = await analysis.export()
        status = {**await user.status(), "monitor": await retry(user.monitor_log)}
        summary = write_outputs(export, status, out, args.threshold)
        summary.update(
            elapsed_s=time.monotonic() - started,
            training=training,
            namespace=rt.namespace,
            arm="control" if args.control or tuning is None else "retraining",
        )
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print_summary(summary, out)
        if not args.keep_agents:
            for name in AGENTS:
                try:
                    await rt.stop(name)
                except Exception as error:  # noqa: BLE001 - already gone
                    logger.debug("cleanup: %s", error)
            unserve(config)  # before the placement controller goes: it releases its slots there
            rt.stop_placement()
        return summary
    finally:
        rt.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m examples.genslm``."""
    prepare_environment()
    asyncio.run(main_async(parse_args(argv)))
