"""Result files of a MOF run: CSV of every candidate, top-k table, best structures, plots, summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from examples.mof.framework import Structure
from examples.mof.records import FUNNEL

COLUMNS = (
    "id",
    "smiles",
    "origin",
    "model_version",
    "llm_version",
    "final_stage",
    "reason",
    "framework_a",
    "framework_density",
    "strain_kcal_mol",
    "uptake_mol_kg",
    "stderr_mol_kg",
    "heat_kj_mol",
)


def final_stage(record: dict[str, Any]) -> str:
    """The deepest stage a record reached."""
    order = ("generated", "valid", "invalid", "assembled", "assembly_failed", "stable", "unstable")
    reached = record["stages"]
    if "scored" in reached:
        return "scored"
    for stage in reversed(order):
        if stage in reached:
            return stage
    return "generated"


def funnel_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many records reached each funnel step."""
    return {step: sum(step in r["stages"] for r in records) for step in FUNNEL}


def origin_funnels(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The funnel counts of each proposal origin (``llm``, ``ngram``, ``ngram_fallback``, ...)."""
    origins = sorted({r["origin"] for r in records})
    return {o: funnel_counts([r for r in records if r["origin"] == o]) for o in origins}


LEARNED = ("llm", "ngram")
"""Origins of the learned model's draws (the served model, or the trigram model without one)."""


def learned_funnels(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The learned model's draws apart: their funnel, valid rate, and funnel per served version."""
    learned = [r for r in records if r["origin"] in LEARNED]
    counts = funnel_counts(learned)
    versions = sorted({r.get("llm_version") for r in learned if r.get("llm_version") is not None})
    return {
        **counts,
        "valid_rate": counts["valid"] / counts["generated"] if counts["generated"] else None,
        "by_version": {
            str(v): funnel_counts([r for r in learned if r.get("llm_version") == v])
            for v in versions
        },
    }


def learned_draws(draws: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The learned model's draws as the Generator counted them (sent or dropped by the screen).

    Args:
        draws: `Generator` ``draws``: per origin and per ``origin:v<version>``, ``drawn`` (new or
            invalid strings), ``valid``, ``sent`` and ``duplicate``.

    Returns:
        ``drawn``, ``valid``, ``sent``, ``valid_rate`` (valid / drawn, None without draws) and the same
        per served version (``by_version``).
    """

    def rate(rows: list[dict[str, int]]) -> dict[str, Any]:
        total = {k: sum(r.get(k, 0) for r in rows) for k in ("drawn", "valid", "sent")}
        drawn = total["drawn"]
        return {**total, "valid_rate": total["valid"] / drawn if drawn else None}

    by_version: dict[str, list[dict[str, int]]] = {}
    for key, row in draws.items():
        origin, _, version = key.partition(":v")
        if origin in LEARNED and version:
            by_version.setdefault(version, []).append(row)
    return {
        **rate([row for key, row in draws.items() if key in LEARNED]),
        "by_version": {
            v: rate(rows) for v, rows in sorted(by_version.items(), key=lambda i: int(i[0]))
        },
    }


def last_third(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Scored, stable, median and best uptake among the last third of the candidates (by id), and the
    scored uptakes (ascending)."""
    ordered = sorted(records, key=lambda r: r["id"])
    tail = ordered[len(ordered) - len(ordered) // 3 :] if ordered else []
    uptakes = sorted(r["uptake_mol_kg"] for r in tail if "scored" in r["stages"])
    median = None
    if uptakes:
        mid = len(uptakes) // 2
        median = uptakes[mid] if len(uptakes) % 2 else (uptakes[mid - 1] + uptakes[mid]) / 2
    return {
        "candidates": len(tail),
        "stable": sum("stable" in r["stages"] for r in tail),
        "scored": len(uptakes),
        "median_uptake": median,
        "best_uptake": uptakes[-1] if uptakes else None,
        "uptakes": uptakes,
    }


def top(records: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` scored records with the highest uptake."""
    scored = [r for r in records if "scored" in r["stages"]]
    return sorted(scored, key=lambda r: r["uptake_mol_kg"], reverse=True)[:k]


def write_outputs(
    export: dict[str, Any], out: Path, k: int = 10, elapsed_s: float | None = None
) -> dict[str, Any]:
    """Writes ``candidates.csv``, ``top.csv``, ``structures/*.cif|xyz``, the plots and ``summary.json``.

    Returns:
        The summary (funnel counts, retrains, best candidates, file names).
    """
    from ase.io import write

    out.mkdir(parents=True, exist_ok=True)
    records = sorted(export["records"], key=lambda r: r["id"])
    with open(out / "candidates.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            writer.writerow({**rec, "final_stage": final_stage(rec)})
    best = top(records, k)
    with open(out / "top.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for rec in best:
            writer.writerow({**rec, "final_stage": "scored"})
    structures = out / "structures"
    structures.mkdir(exist_ok=True)
    files = []
    for cid, data in export["best_structures"].items():
        atoms = Structure.model_validate(data).to_atoms()
        for suffix in ("cif", "xyz"):
            path = structures / f"{cid}.{suffix}"
            write(path, atoms, format="extxyz" if suffix == "xyz" else suffix)
            files.append(str(path.relative_to(out)))
    plots = plot(export, out)
    summary = {
        "funnel": funnel_counts(records),
        "origins": origin_funnels(records),
        "learned": learned_funnels(records),
        "last_third": last_third(records),
        "retrains": len(export["retrains"]),
        "elapsed_s": elapsed_s,
        "best": [
            {"id": r["id"], "smiles": r["smiles"], "uptake_mol_kg": r["uptake_mol_kg"]}
            for r in best[:5]
        ],
        "files": ["candidates.csv", "top.csv", *files, *plots],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot(export: dict[str, Any], out: Path) -> list[str]:
    """``best_uptake.png`` (best CO2 uptake over time, retrains marked) and ``funnel.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = sorted(export["history"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        times = [t for t, _ in history]
        best = []
        running = float("-inf")
        for _, uptake in history:
            running = max(running, uptake)
            best.append(running)
        ax.scatter(times, [u for _, u in history], s=10, alpha=0.4, label="scored MOF")
        ax.step(times, best, where="post", color="C3", label="best so far")
    for i, retrain in enumerate(export["retrains"]):
        ax.axvline(retrain["t"], color="grey", ls="--", lw=0.8, label="retrain" if i == 0 else None)
        if retrain.get("llm_version") is not None:  # the served model's version from here on
            ax.annotate(
                f"v{retrain['llm_version']}",
                (retrain["t"], 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -10),
                textcoords="offset points",
                fontsize=7,
                color="grey",
            )
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("CO2 uptake at 0.1 bar, 298 K (mol/kg)")
    ax.set_title("MOF discovery: best CO2 uptake over time")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "best_uptake.png", dpi=120)
    plt.close(fig)

    counts = funnel_counts(export["records"])
    learned = funnel_counts([r for r in export["records"] if r["origin"] in LEARNED])
    fig, ax = plt.subplots(figsize=(6, 3))
    rows = list(range(len(FUNNEL)))
    steps = list(reversed(FUNNEL))
    ax.barh([y + 0.2 for y in rows], [counts[s] for s in steps], 0.4, color="C0", label="all")
    ax.barh(
        [y - 0.2 for y in rows], [learned[s] for s in steps], 0.4, color="C2", label="learned model"
    )
    for i, step in enumerate(steps):
        ax.text(counts[step], i + 0.2, f" {counts[step]}", va="center", fontsize=7)
        ax.text(learned[step], i - 0.2, f" {learned[step]}", va="center", fontsize=7)
    ax.set_yticks(rows, steps)
    ax.set_xlabel("candidates")
    ax.set_title("MOF discovery funnel (the learned model's draws apart)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "funnel.png", dpi=120)
    plt.close(fig)
    return ["best_uptake.png", "funnel.png"]


def print_summary(summary: dict[str, Any], export: dict[str, Any], out: Path, k: int = 10) -> None:
    """The funnel and the top-k table on the console."""
    console = Console()
    funnel = summary["funnel"]
    console.print(
        "[bold]funnel[/bold]: "
        + " -> ".join(f"{step} {funnel[step]}" for step in FUNNEL)
        + f"   retrains: {summary['retrains']}"
    )
    console.print(
        "[bold]origins[/bold] (generated/valid/scored): "
        + ", ".join(
            f"{origin} {c['generated']}/{c['valid']}/{c['scored']}"
            for origin, c in summary.get("origins", {}).items()
        )
    )
    learned = summary.get("learned")
    if learned:
        rate = learned["valid_rate"]
        console.print(
            f"[bold]learned model[/bold]: {learned['generated']} draws, {learned['valid']} valid "
            f"({'-' if rate is None else f'{rate:.0%}'}), {learned['scored']} scored; by served "
            "version (generated/valid/scored): "
            + (
                ", ".join(
                    f"v{v} {c['generated']}/{c['valid']}/{c['scored']}"
                    for v, c in learned["by_version"].items()
                )
                or "-"
            )
        )
    draws = summary.get("learned_draws")
    if draws and draws["drawn"]:
        console.print(
            f"[bold]learned model's draws[/bold] (sent or screened out): {draws['drawn']} drawn, "
            f"{draws['valid']} valid ({draws['valid_rate']:.0%}), {draws['sent']} sent; by version "
            "(drawn/valid/sent): "
            + ", ".join(
                f"v{v} {c['drawn']}/{c['valid']}/{c['sent']}"
                for v, c in draws["by_version"].items()
            )
            + f"; surrogate screen x{summary.get('screen', 1)} fitted on "
            f"{summary.get('surrogate_points', 0)} scored linkers"
        )
    tail = summary.get("last_third")
    if tail and tail["scored"]:
        console.print(
            f"[bold]last third[/bold]: {tail['stable']} stable, {tail['scored']} scored, median "
            f"uptake {tail['median_uptake']:.3f}, best {tail['best_uptake']:.3f} mol/kg"
        )
    if summary.get("llm"):
        console.print(f"[bold]served model[/bold]: {summary['llm']}")
    table = Table(title=f"top {k} MOFs by CO2 uptake (298 K, 0.1 bar)")
    for column in ("id", "linker SMILES", "a (Å)", "strain", "uptake mol/kg", "Qst kJ/mol"):
        table.add_column(column)
    for rec in top(export["records"], k):
        table.add_row(
            rec["id"],
            rec["smiles"],
            f"{rec.get('framework_a', 0):.2f}",
            f"{rec.get('strain_kcal_mol', 0):.2f}",
            f"{rec['uptake_mol_kg']:.3f} ± {rec.get('stderr_mol_kg', 0):.3f}",
            f"{rec.get('heat_kj_mol', 0):.1f}",
        )
    console.print(table)
    console.print(f"results in {out}: " + ", ".join(summary["files"][:4]) + ", ...")
