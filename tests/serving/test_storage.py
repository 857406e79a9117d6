"""Publishing and fetching model folders through real object storage (SeaweedFS S3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.errors import WeightsError
from serving.spec import ModelSpec
from serving.storage import MANIFEST_NAME, fetch_model, publish_model, read_manifest


def test_publish_then_fetch_round_trips(
    s3_server, tiny_model_dirs: list[Path], tmp_path: Path
) -> None:
    uri = f"s3://{s3_server.new_bucket()}/m"
    manifest = publish_model(tiny_model_dirs[1], uri, s3_server.storage_options)
    assert "model.safetensors" in manifest.files and "config.json" in manifest.files
    got = fetch_model(uri, tmp_path / "copy", s3_server.storage_options)
    assert got == manifest == read_manifest(uri, s3_server.storage_options)
    for rel in manifest.files:
        assert (tmp_path / "copy" / rel).read_bytes() == (tiny_model_dirs[1] / rel).read_bytes()
    assert (tmp_path / "copy" / MANIFEST_NAME).exists()


def test_corrupt_weights_are_refused_and_leave_nothing(
    s3_server, bad_specs: list[ModelSpec], tmp_path: Path
) -> None:
    corrupt = bad_specs[0]
    with pytest.raises(WeightsError, match="checksum mismatch .*model.safetensors"):
        fetch_model(corrupt.weights_uri, tmp_path / "c", corrupt.storage_options)
    assert list(tmp_path.iterdir()) == []  # no partial folder left behind


def test_missing_model_is_a_clear_error(bad_specs: list[ModelSpec], tmp_path: Path) -> None:
    missing = bad_specs[1]
    with pytest.raises(WeightsError, match="no model at .*nothing"):
        fetch_model(missing.weights_uri, tmp_path / "m", missing.storage_options)


def test_missing_file_listed_in_manifest(
    s3_server, tiny_model_dirs: list[Path], tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    publish_model(tiny_model_dirs[0], f"s3://{bucket}/m", s3_server.storage_options)
    s3_server.filesystem().rm_file(f"{bucket}/m/config.json")
    with pytest.raises(WeightsError, match="missing in storage: .*config.json"):
        fetch_model(f"s3://{bucket}/m", tmp_path / "m", s3_server.storage_options)
