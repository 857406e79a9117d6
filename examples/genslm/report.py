"""Result files of a GenSLM run: genes.csv, promising.fasta, similarity plots, summary.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

FUNNEL = ("generated", "translated", "promising")


def write_outputs(
    export: dict[str, Any], status: dict[str, Any], out: Path, threshold: float, k: int = 10
) -> dict[str, Any]:
    """Writes the CSV, the FASTA of the repository, the plots and the summary; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(export["analyzed"], key=lambda r: r["id"])
    with open(out / "genes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=["id", "round", "temperature", "orf", "length", "identity", "score"],
            extrasaction="ignore",
        )
        writer.writeheader()
        writer.writerows(rows)
    repository = sorted(export["repository"].values(), key=lambda r: -r["identity"])
    with open(out / "promising.fasta", "w") as handle:
        handle.writelines(
            f">{gene['id']} identity={gene['identity']:.3f} T={gene['temperature']}\n"
            f"{gene['dna']}\n"
            for gene in repository
        )
    with open(out / "promising_protein.fasta", "w") as handle:
        handle.writelines(
            f">{gene['id']} identity={gene['identity']:.3f}\n{gene['protein']}\n"
            for gene in repository
        )
    plots = plot(rows, status, out, threshold)
    funnel = {
        "generated": len(rows),
        "translated": sum(r["orf"] for r in rows),
        "promising": len(repository),
    }
    summary = {
        "funnel": funnel,
        "rounds": status["round_summaries"],
        "best": [{"id": g["id"], "identity": g["identity"]} for g in repository[:k]],
        "files": ["genes.csv", "promising.fasta", "promising_protein.fasta", *plots],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot(
    rows: list[dict[str, Any]], status: dict[str, Any], out: Path, threshold: float
) -> list[str]:
    """``similarity_per_gene.png`` (identity to the parent per gene, by round, with the served model
    version that wrote it) and
    ``repository_growth.png`` (promising genes over time, as the User agent saw it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for number in sorted({r["round"] for r in rows}):
        genes = [r for r in rows if r["round"] == number]
        xs = [rows.index(r) for r in genes]
        temp = genes[0]["temperature"]
        versions = ",".join(sorted({str(r.get("model_version")) for r in genes}))
        ax.bar(
            xs,
            [r["identity"] for r in genes],
            label=f"round {number} (T={temp}, model v{versions})",
        )
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label="promising")
    ax.set_xlabel("gene")
    ax.set_ylabel("identity to parent protein")
    ax.set_ylim(0, 1.05)
    ax.set_title("GenSLM: similarity of each generated gene to the parent")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "similarity_per_gene.png", dpi=120)
    plt.close(fig)

    monitor = status.get("monitor") or []
    fig, ax = plt.subplots(figsize=(6, 3))
    if monitor:
        ax.step([m["t"] for m in monitor], [m["promising"] for m in monitor], where="post")
    ax.set_xlabel("time since the User agent started (s)")
    ax.set_ylabel("promising genes stored")
    ax.set_title("Repository growth (User agent's monitor)")
    fig.tight_layout()
    fig.savefig(out / "repository_growth.png", dpi=120)
    plt.close(fig)
    return ["similarity_per_gene.png", "repository_growth.png"]


def print_summary(summary: dict[str, Any], out: Path) -> None:
    """Funnel, per-round table and the best genes on the console."""
    console = Console()
    funnel = summary["funnel"]
    console.print("[bold]funnel[/bold]: " + " -> ".join(f"{s} {funnel[s]}" for s in FUNNEL))
    table = Table(title=f"rounds ({summary.get('arm', 'retraining')})")
    columns = ("round", "T", "served version", "generated", "complete ORFs", "promising")
    for column in (*columns, "mean identity", "best identity", "fine-tuned to"):
        table.add_column(column)
    for r in summary["rounds"]:
        table.add_row(
            str(r["round"]),
            f"{r['temperature']}",
            ",".join(r.get("model_versions", [])),
            str(r["generated"]),
            f"{r['translated']} ({r.get('orf_rate', 0):.0%})",
            str(r.get("promising", "-")),
            f"{r['mean_identity']:.3f}",
            f"{r['best_identity']:.3f}",
            str(r.get("fine_tuned_to") or "-"),
        )
    console.print(table)
    console.print(f"results in {out}: " + ", ".join(summary["files"]))
