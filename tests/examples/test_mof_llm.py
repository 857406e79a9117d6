"""The MOF Generator with a served SMILES model (``--llm``), and its fallback when serving is down."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from examples.common.llm import free_port
from tests.examples.conftest import read_summary, run_module

pytestmark = pytest.mark.slow

BUDGET = 16
SMALL = ("--budget", str(BUDGET), "--retrain-every", "4", "--insertions", "200", "--quiet")


def origins(out: Path) -> list[str]:
    with open(out / "candidates.csv") as handle:
        return [row["origin"] for row in csv.DictReader(handle)]


def test_generator_samples_from_the_served_model(tmp_path: Path) -> None:
    run_module(
        "examples.mof", "--llm", "--llm-ratio", "1.0", "--llm-steps", "300", *SMALL,
        "--out", str(tmp_path),
    )  # fmt: skip
    summary = read_summary(tmp_path)
    found = origins(tmp_path)
    assert len(found) == BUDGET == summary["funnel"]["generated"]
    assert found.count("llm") >= 1  # proposals the served model made, as the Database recorded them
    assert summary["origins"]["llm"]["generated"] == found.count("llm")
    assert "ngram" not in found and "ngram_fallback" not in found  # ratio 1: no trigram draws
    stats = summary["llm"]
    assert stats["errors"] == 0 and stats["fallbacks"] == 0
    assert stats["requests"] >= found.count("llm")
    assert summary["llm_training"]["final_loss"] < summary["llm_training"]["first_loss"]
    assert (tmp_path / "smiles-lm" / "model.safetensors").exists()


def test_generator_falls_back_to_the_trigram_model_when_serving_is_down(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    run_module("examples.mof", "--llm", "--llm-url", down, *SMALL, "--out", str(tmp_path))
    summary = read_summary(tmp_path)
    found = origins(tmp_path)
    assert summary["funnel"]["generated"] == BUDGET and summary["funnel"]["scored"] >= 1
    assert "llm" not in found
    assert found.count("ngram_fallback") >= 1
    stats = summary["llm"]
    assert stats["errors"] >= 1 and stats["fallbacks"] >= found.count("ngram_fallback")
    assert "ClientConnectorError" in stats["last_error"] or "Connect" in stats["last_error"]
