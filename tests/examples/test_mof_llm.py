"""The MOF Generator with a served SMILES model (the default learned model): a retrain fine-tunes it and
publishes version 2, which the Generator's next draws come from; and the fallback when serving is down
(checked on the run shared with `test_mof` and `test_job_submit`, `tests.examples.conftest.mof_job`)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.examples.conftest import MOF_JOB_BUDGET, MofJob, mof_run, read_summary, run_module

pytestmark = pytest.mark.slow


def origins(out: Path) -> list[str]:
    with open(out / "candidates.csv") as handle:
        return [row["origin"] for row in csv.DictReader(handle)]


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "candidates.csv") as handle:
        return list(csv.DictReader(handle))


def test_a_retrain_publishes_version_2_and_the_next_draws_come_from_it(tmp_path: Path) -> None:
    # Sized so that a small budget still has draws from version 2 on: most draws go to the served model
    # (share 0.8), the first retrain comes after 2 scores, and no surrogate screen (--screen 1; the screen
    # is tested Ray-free in test_mof_surrogate) throws post-retrain draws away. 24 candidates gave 8 draws
    # from version 2 or later; with share 0.6, a retrain every 3 scores and the screen (the sizes of the
    # 60-candidate run before) 24 candidates gave only 1.
    run_module(
        "examples.mof", "--llm-ratio", "1.0", "--llm-steps", "300", "--learned-share", "0.8",
        "--max-pending", "6", "--fine-tune-steps", "30", "--budget", "24", "--retrain-every", "2",
        "--screen", "1", "--insertions", "400", "--quiet", "--out", str(tmp_path),
    )  # fmt: skip
    summary = read_summary(tmp_path)
    found = origins(tmp_path)
    assert len(found) == 24 == summary["funnel"]["generated"]
    assert found.count("llm") >= 1  # proposals the served model made, as the Database recorded them
    assert summary["origins"]["llm"]["generated"] == found.count("llm")
    assert "ngram" not in found and "ngram_fallback" not in found  # ratio 1: no trigram draws
    stats = summary["llm"]
    assert stats["errors"] == 0 and stats["fallbacks"] == 0
    assert stats["requests"] >= found.count("llm")
    # The first retrain fine-tuned version 1 and published version 2 ...
    tunes = summary["fine_tunes"]
    assert tunes and (tunes[0]["from_version"], tunes[0]["version"]) == ("1", "2")
    assert (tmp_path / "smiles-lm-weights" / "versions" / "2" / "model.safetensors").exists()
    # ... and draws after it came from a newer version, counted by version (ids are in draw order)
    versions = [int(r["llm_version"]) for r in sorted(rows(tmp_path), key=lambda r: r["id"])
                if r["origin"] == "llm"]  # fmt: skip
    assert versions[0] == 1 and max(versions) >= 2 and versions == sorted(versions)
    by_version = summary["learned"]["by_version"]
    assert sum(c["generated"] for c in by_version.values()) == found.count("llm")
    assert sum(n for v, n in stats["by_version"].items() if v != "1") >= 1
    assert summary["llm_training"]["final_loss"] < summary["llm_training"]["first_loss"]
    assert (tmp_path / "smiles-lm" / "model.safetensors").exists()


def test_generator_falls_back_to_the_trigram_model_when_serving_is_down(mof_job: MofJob) -> None:
    out = mof_run(mof_job)  # its --llm-url is a port nothing listens on
    summary = read_summary(out)
    found = origins(out)
    assert summary["funnel"]["generated"] == MOF_JOB_BUDGET and summary["funnel"]["scored"] >= 1
    assert "llm" not in found
    assert found.count("ngram_fallback") >= 1
    stats = summary["llm"]
    assert stats["errors"] >= 1 and stats["fallbacks"] >= found.count("ngram_fallback")
    assert "ClientConnectorError" in stats["last_error"] or "Connect" in stats["last_error"]
