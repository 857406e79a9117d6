"""Command line of the MOF discovery pipeline: ``python -m examples.mof --budget 150 --out mof-out``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from examples.common.llm import unserve
from examples.common.progress import FunnelProgress
from examples.common.runtime import (
    add_common_arguments,
    checkpoint_uri,
    make_runtime,
    prepare_environment,
)
from examples.mof.pipeline import MofConfig, launch, run_until_done, stop_all
from examples.mof.records import FUNNEL
from examples.mof.report import learned_draws, print_summary, write_outputs
from examples.mof.smiles_lm import MODEL_ID, LlmConfig

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.mof",
        description="MOF discovery: generate linkers, assemble, validate, estimate CO2 uptake.",
    )
    parser.add_argument("--budget", type=int, default=150, help="linkers to propose in all")
    parser.add_argument("--retrain-every", type=int, default=10, help="scores between retrains")
    parser.add_argument(
        "--control",
        action="store_true",
        help="the control arm: same seed and budget, never retrain (no fine-tune, no refit, "
        "no surrogate screen)",
    )
    parser.add_argument(
        "--screen",
        type=int,
        default=3,
        help="once retrained, draw each batch this many times over and keep the linkers the "
        "surrogate predicts best (1: no screen)",
    )
    parser.add_argument(
        "--learned",
        choices=("llm", "trigram"),
        default="llm",
        help="the Generator's learned model: the served SMILES LM (default) or the trigram model",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=12,
        help="propose only while at most this many candidates are not final (0: no limit)",
    )
    parser.add_argument(
        "--learned-share",
        type=float,
        default=None,
        help="share of draws from the learned model (default 0.5 with llm, 0.3 with trigram); "
        "the rest are mutations and crossovers (55:15)",
    )
    parser.add_argument("--insertions", type=int, default=2000, help="Widom insertions per MOF")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=10, help="rows of the top-k table")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many s")
    parser.add_argument(
        "--keep-agents", action="store_true", help="leave the agents running at the end"
    )
    llm = parser.add_argument_group("served SMILES model (--learned llm, the default)")
    llm.add_argument(
        "--llm",
        action="store_const",
        dest="learned",
        const="llm",
        help="same as --learned llm: train a tiny SMILES Llama, serve it, sample from it",
    )
    llm.add_argument(
        "--llm-ratio",
        type=float,
        default=1.0,
        help="share of the generative-model draws that go to the served model (rest: trigram)",
    )
    llm.add_argument("--llm-steps", type=int, default=400, help="training steps of the SMILES LM")
    llm.add_argument("--llm-temperature", type=float, default=1.0)
    llm.add_argument(
        "--fine-tune-steps",
        type=int,
        default=60,
        help="steps of each retrain's fine-tune of the served model (0: never fine-tune it)",
    )
    llm.add_argument(
        "--llm-url",
        default=None,
        help="use a model already served at this OpenAI API root (.../v1): no training or serving",
    )
    llm.add_argument("--llm-model", default=MODEL_ID, help="model id in the serving app")
    llm.add_argument("--port", type=int, default=0, help="Serve HTTP port (0: a free one)")
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
    serving_config: Any = None
    training: dict[str, float] | None = None
    try:
        llm: LlmConfig | None = None
        if args.learned == "llm":
            base_url, weights_uri = args.llm_url, None
            fine_tuning = base_url is None and not args.control and args.fine_tune_steps > 0
            # the driver holds the handle for the run: a named actor ends with its last handle
            tuner = start_warm_fine_tuner(rt.namespace) if fine_tuning else None
            if base_url is None:
                base_url, serving_config, training, weights_uri = await train_and_serve(
                    out, args.llm_steps, f"mof-{rt.namespace}", args.port, rt.namespace
                )
            if tuner is not None:
                await tuner.ready.remote()  # started and warm before the first retrain is due
            llm = LlmConfig(
                base_url=base_url,
                model=args.llm_model,
                ratio=args.llm_ratio,
                temperature=args.llm_temperature,
                weights_uri=weights_uri,
                fine_tune_steps=args.fine_tune_steps,
                fine_tuner=FINE_TUNER if fine_tuning else None,
            )
        share = args.learned_share
        config = MofConfig(
            budget=args.budget,
            retrain_every=0 if args.control else args.retrain_every,
            insertions=args.insertions,
            seed=args.seed,
            llm=llm,
            max_pending=args.max_pending,
            screen=1 if args.control else args.screen,
            learned_share=share if share is not None else (0.5 if llm is not None else 0.3),
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
        summary["llm"] = progress.generator.get("llm")
        summary["llm_training"] = training
        summary["fine_tunes"] = progress.generator.get("fine_tunes", [])
        summary["learned_draws"] = learned_draws(progress.generator.get("draws", {}))
        summary["surrogate_points"] = progress.generator.get("surrogate_points", 0)
        summary["screen"] = config.screen
        summary["arm"] = "control" if args.control else "retraining"
        summary["learned_model"] = args.learned
        summary["learned_share"] = config.learned_share
        summary["seed"] = args.seed
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print_summary(summary, export, out, args.top)
        if not args.keep_agents:
            if serving_config is not None:
                unserve(serving_config)  # first: it releases its slots in the placement controller
            await stop_all(rt)
        return summary
    finally:
        rt.close()


FINE_TUNER = "smiles-lm-fine-tuner"
"""Name of the `FineTuner` actor the driver starts in the agents' namespace."""


def start_warm_fine_tuner(namespace: str) -> Any:
    """Starts the Generator's `FineTuner` now, while the model trains and deploys, so that torch and
    the model code are imported before the first retrain (seconds on loaded cores).

    Returns:
        The actor's handle (its ``ready`` method returns once it is warm).
    """
    from examples.common.llm import start_fine_tuner

    return start_fine_tuner(LlmConfig.model_fields["fine_tune_cpus"].default, FINE_TUNER, namespace)


async def train_and_serve(
    out: Path, steps: int, app_name: str, port: int, namespace: str | None = None
) -> tuple[str, Any, dict[str, float], str]:
    """Trains the SMILES LM, publishes it as a new version and serves it.

    Returns:
        The base URL, the serving config, the training figures and the versioned weights URI.
    """
    from examples.common.llm import free_port, serve_model
    from examples.mof.smiles_lm import train_and_publish

    weights, training = await asyncio.to_thread(train_and_publish, out, steps)
    print(
        f"SMILES LM trained in {training['seconds']:.1f} s "
        f"(loss {training['first_loss']:.2f} -> {training['final_loss']:.2f}); weights {weights}"
    )
    base_url, config = await asyncio.to_thread(
        serve_model,
        MODEL_ID,
        weights,
        app_name,
        out / "model-cache",
        port or free_port(),
        namespace,
    )
    print(f"serving {MODEL_ID} at {base_url}")
    return base_url, config, training, weights


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m examples.mof``."""
    prepare_environment()
    asyncio.run(main_async(parse_args(argv)))
