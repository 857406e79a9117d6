"""The MOF pipeline end to end, as ``python -m examples.mof`` on a small budget: what it records and the
results it writes (checked on the run shared with `test_job_submit`, `tests.examples.conftest.mof_job`)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.examples.conftest import MOF_JOB_BUDGET as BUDGET
from tests.examples.conftest import MofJob, read_summary
from tests.examples.conftest import mof_run as output_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mof_run(mof_job: MofJob) -> Path:
    return output_of(mof_job)


def test_every_candidate_is_recorded_and_the_funnel_narrows(mof_run: Path) -> None:
    summary = read_summary(mof_run)
    funnel = summary["funnel"]
    assert funnel["generated"] == BUDGET
    counts = [funnel[s] for s in ("generated", "valid", "assembled", "stable", "scored")]
    assert counts == sorted(counts, reverse=True)
    assert funnel["scored"] >= 1
    with open(mof_run / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == BUDGET and len({r["id"] for r in rows}) == BUDGET
    finals = {r["final_stage"] for r in rows}
    assert finals <= {"invalid", "assembly_failed", "unstable", "scored"}, finals
    scored = [r for r in rows if r["final_stage"] == "scored"]
    assert len(scored) == funnel["scored"]
    assert all(float(r["uptake_mol_kg"]) > 0 for r in scored)
    assert all(float(r["strain_kcal_mol"]) <= 5.0 for r in scored)


def test_results_top_table_structures_and_plots(mof_run: Path) -> None:
    summary = read_summary(mof_run)
    with open(mof_run / "top.csv") as handle:
        top = list(csv.DictReader(handle))
    uptakes = [float(r["uptake_mol_kg"]) for r in top]
    assert uptakes == sorted(uptakes, reverse=True) and top
    assert summary["best"][0]["id"] == top[0]["id"]
    cif = mof_run / "structures" / f"{top[0]['id']}.cif"
    assert cif.exists()
    from ase.io import read

    atoms = read(cif)
    assert "Zn" in atoms.get_chemical_symbols() and atoms.cell.volume > 100
    for plot in ("best_uptake.png", "funnel.png"):
        assert (mof_run / plot).stat().st_size > 5000
    assert summary["retrains"] >= 1  # retrain_every=5 and at least 5 scored on this budget
