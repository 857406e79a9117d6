"""Does online retraining help? The MOF and GenSLM pipelines with retraining against a control, 3 seeds.

Each run is ``python -m examples.mof`` in a process of its own (as a scientist runs it), with the same
seed and budget in both arms: ``retraining`` (each retrain fine-tunes the served SMILES LM on the best
scored linkers and publishes a new version, which the serving app moves to, and refits the surrogate
screen that ranks each batch's draws) and ``control`` (``--control``: the same served version 1 and
the same mix of draws from the seed linkers, never retrained, no screen). The main figure is the median
CO2 uptake of the scored candidates among the last third of the run's candidates; the goal is
retraining above control in at least 2 of 3 seeds. Beside it, ``P(beats control)``: the chance that a
scored candidate of the retraining arm's last third, drawn at random, has a higher uptake than one of the
control's (the Mann-Whitney U statistic; 0.5: neither is ahead), which uses every value of a heavy-tailed
sample rather than its middle one. The learned model's valid rate counts all its draws, those the screen
dropped included.

GenSLM: ``python -m examples.genslm`` (4 rounds of 8 genes) with a fine-tune of the served codon LM
after each round against ``--control``; per round the complete-ORF rate, mean identity and promising
genes; the main figure is the promising genes of the last round.

Run: ``python -m benchmarks.examples_learning [--pipelines mof,genslm] [--budget 120] [--seeds 0,1,2]``
(about 6 minutes for MOF and 5 for GenSLM on 2 cores). Prints the tables and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ARMS = ("retraining", "control")


def run_example(module: str, out: Path, seed: int, control: bool, *args: str) -> dict[str, Any]:
    """Runs ``python -m module`` (one arm) to the end; returns its summary plus ``wall_s``."""
    command = [
        sys.executable,
        "-m",
        module,
        "--seed",
        str(seed),
        "--quiet",
        "--out",
        str(out),
        *args,
    ]
    if control:
        command.append("--control")
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    summary["wall_s"] = time.monotonic() - started
    return summary


def run_mof(out: Path, seed: int, budget: int, retrain_every: int, control: bool) -> dict[str, Any]:
    """Runs one MOF arm to the end and returns its summary (plus its wall time)."""
    return run_example(
        "examples.mof", out, seed, control,
        "--budget", str(budget), "--retrain-every", str(retrain_every), "--insertions", "1000",
    )  # fmt: skip


def run_genslm(out: Path, seed: int, control: bool) -> dict[str, Any]:
    """Runs one GenSLM arm to the end and returns its rounds (plus its wall time)."""
    summary = run_example("examples.genslm", out, seed, control)
    keys = ("round", "model_versions", "orf_rate", "mean_identity", "promising")
    return {
        "rounds": [{k: r.get(k) for k in keys} for r in summary["rounds"]],
        "wall_s": round(summary["wall_s"], 1),
    }


def genslm_table(
    results: dict[str, dict[int, dict[str, Any]]], seeds: list[int]
) -> tuple[Table, int]:
    """The GenSLM table and how many seeds retraining wins on the last round's promising genes."""
    table = Table(
        title="GenSLM: retraining vs control (per round: complete-ORF rate / mean identity / promising)"
    )
    for column in ("seed", "arm", "round 0", "round 1", "round 2", "round 3", "versions", "wall s"):
        table.add_column(column)
    wins = 0
    for seed in seeds:
        for arm in ARMS:
            run = results[arm][seed]
            cells = [
                f"{r['orf_rate']:.0%} / {r['mean_identity']:.2f} / {r['promising']}"
                for r in run["rounds"]
            ]
            versions = ",".join(v for r in run["rounds"] for v in r["model_versions"])
            table.add_row(str(seed), arm, *cells, versions, str(run["wall_s"]))
        last = {arm: results[arm][seed]["rounds"][-1]["promising"] for arm in ARMS}
        wins += last["retraining"] > last["control"]
    return table, wins


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The table's figures of one run."""
    learned, tail = summary["learned"], summary["last_third"]
    draws = summary.get("learned_draws") or {}
    return {
        "learned_valid_rate": draws.get("valid_rate", learned["valid_rate"]),
        "learned_draws": draws.get("drawn", learned["generated"]),
        "learned_sent": learned["generated"],
        "versions": sorted(learned["by_version"], key=int),
        "stable": summary["funnel"]["stable"],
        "scored": summary["funnel"]["scored"],
        "last_third_stable": tail["stable"],
        "last_third_scored": tail["scored"],
        "last_third_median": tail["median_uptake"],
        "last_third_best": tail["best_uptake"],
        "last_third_uptakes": [round(u, 4) for u in tail.get("uptakes", [])],
        "wall_s": round(summary["wall_s"], 1),
    }


def superiority(first: list[float], second: list[float]) -> float | None:
    """The chance that a random value of ``first`` beats one of ``second`` (ties count half): the
    Mann-Whitney U statistic over ``len(first) * len(second)``; 0.5 when neither arm is ahead."""
    if not first or not second:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in first for b in second)
    return wins / (len(first) * len(second))


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    """Runs both arms over the seeds and prints the table and the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.examples_learning")
    parser.add_argument("--budget", type=int, default=120, help="MOF candidates per run")
    parser.add_argument("--retrain-every", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pipelines", default="mof,genslm")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    pipelines = args.pipelines.split(",")
    work = Path(tempfile.mkdtemp(prefix="examples-learning-"))
    results: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
    genslm: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
    started = time.monotonic()
    console = Console(width=170)
    genslm_wins = None
    if "genslm" in pipelines:
        for seed in seeds:
            for arm in ARMS:
                genslm[arm][seed] = run_genslm(
                    work / f"genslm-{arm}-{seed}", seed, arm == "control"
                )
        table, genslm_wins = genslm_table(genslm, seeds)
        console.print(table)
        console.print(
            f"GenSLM: retraining has more promising genes in the last round in {genslm_wins} of "
            f"{len(seeds)} seeds (goal: >= 2 of 3)"
        )
    for seed in seeds if "mof" in pipelines else []:
        for arm in ARMS:
            summary = run_mof(
                work / f"mof-{arm}-{seed}", seed, args.budget, args.retrain_every, arm == "control"
            )
            results[arm][seed] = figures(summary)
    wins = None
    if "mof" in pipelines:
        table = Table(
            title=f"MOF: retraining vs control (budget {args.budget}, seeds {args.seeds})"
        )
        for column in (
            "seed", "arm", "learned valid (draws)", "versions", "stable", "scored",
            "last third: stable", "scored", "median uptake", "best uptake", "P(beats control)",
            "wall s",
        ):  # fmt: skip
            table.add_column(column)
        wins = 0
        for seed in seeds:
            ahead = superiority(
                results["retraining"][seed]["last_third_uptakes"],
                results["control"][seed]["last_third_uptakes"],
            )
            results["retraining"][seed]["p_beats_control"] = ahead
            for arm in ARMS:
                f = results[arm][seed]
                table.add_row(
                    str(seed), arm, _fmt(f["learned_valid_rate"], ".0%"), ",".join(f["versions"]),
                    str(f["stable"]), str(f["scored"]), str(f["last_third_stable"]),
                    str(f["last_third_scored"]), _fmt(f["last_third_median"]),
                    _fmt(f["last_third_best"]), _fmt(ahead, ".2f") if arm == "retraining" else "",
                    str(f["wall_s"]),
                )  # fmt: skip
            retrained = results["retraining"][seed]["last_third_median"]
            control = results["control"][seed]["last_third_median"]
            wins += retrained is not None and (control is None or retrained > control)
        console.print(table)
        console.print(
            f"MOF: retraining beats control on the last third's median uptake in {wins} of {len(seeds)} "
            f"seeds (goal: >= 2 of 3); {time.monotonic() - started:.0f} s in all"
        )
    print(
        json.dumps(
            {
                "benchmark": "examples_learning",
                "budget": args.budget,
                "seeds": seeds,
                "mof": {arm: {str(s): results[arm][s] for s in results[arm]} for arm in ARMS},
                "mof_wins": wins if "mof" in pipelines else None,
                "genslm": {arm: {str(s): genslm[arm][s] for s in genslm[arm]} for arm in ARMS},
                "genslm_wins": genslm_wins,
            }
        )
    )


if __name__ == "__main__":
    main()
