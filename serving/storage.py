"""Model folders in object storage: publish with a checksum manifest, fetch with verification."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, Field, ValidationError

from serving.errors import WeightsError

MANIFEST_NAME = "serving-manifest.json"
_CHUNK = 8 << 20


class FileEntry(BaseModel):
    """One file of a model folder."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """The checksum manifest stored beside a model's files (``serving-manifest.json``)."""

    files: dict[str, FileEntry]

    @property
    def total_bytes(self) -> int:
        """Bytes of all files listed."""
        return sum(entry.size for entry in self.files.values())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(local_dir: str | os.PathLike[str]) -> Manifest:
    """Hashes every file below ``local_dir`` (except a manifest) into a :class:`Manifest`."""
    root = Path(local_dir)
    files: dict[str, FileEntry] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            rel = path.relative_to(root).as_posix()
            files[rel] = FileEntry(sha256=_sha256_file(path), size=path.stat().st_size)
    if not files:
        raise ValueError(f"{root} holds no files to publish")
    return Manifest(files=files)


def publish_model(
    local_dir: str | os.PathLike[str], uri: str, storage_options: dict[str, Any] | None = None
) -> Manifest:
    """Uploads a local model folder to ``uri`` with a checksum manifest written last.

    Args:
        local_dir: a folder with safetensors weights, ``config.json`` and tokenizer files.
        uri: the fsspec folder URI to upload to (``s3://bucket/models/name``).
        storage_options: fsspec keyword arguments for ``uri``.

    Returns:
        The manifest written.
    """
    manifest = build_manifest(local_dir)
    fs, base = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    for rel in manifest.files:
        parent = f"{base}/{rel}".rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(Path(local_dir) / rel), f"{base}/{rel}")
    fs.pipe_file(f"{base}/{MANIFEST_NAME}", manifest.model_dump_json(indent=1).encode())
    return manifest


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> Manifest:
    """Reads and validates a model folder's manifest.

    Raises:
        WeightsError: the folder or its manifest is missing or unreadable.
    """
    fs, base = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    try:
        raw = fs.cat_file(f"{base}/{MANIFEST_NAME}")
    except FileNotFoundError:
        raise WeightsError(f"no model at {uri}: {MANIFEST_NAME} not found") from None
    except Exception as exc:
        raise WeightsError(f"cannot read {uri}/{MANIFEST_NAME}: {exc!r}") from exc
    try:
        return Manifest.model_validate(json.loads(raw))
    except (ValidationError, ValueError) as exc:
        raise WeightsError(f"corrupt manifest at {uri}/{MANIFEST_NAME}: {exc}") from exc


def _fetch_one(fs: Any, src: str, dst: Path, entry: FileEntry, uri: str, rel: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with fs.open(src, "rb", block_size=_CHUNK) as source, dst.open("wb") as sink:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
    except FileNotFoundError:
        raise WeightsError(f"model file missing in storage: {uri}/{rel}") from None
    except Exception as exc:
        raise WeightsError(f"cannot read {uri}/{rel}: {exc!r}") from exc
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise WeightsError(
            f"checksum mismatch for {uri}/{rel}: expected {entry.size} bytes sha256 "
            f"{entry.sha256[:12]}..., got {size} bytes sha256 {digest.hexdigest()[:12]}..."
        )


def fetch_model(
    uri: str,
    dest: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    max_workers: int = 4,
) -> Manifest:
    """Downloads a model folder to ``dest``, verifying every file's size and sha256.

    The files land in a temporary sibling folder that is renamed to ``dest`` only once all are
    verified, so ``dest`` either holds a complete, verified copy or does not exist.

    Raises:
        WeightsError: missing manifest or file, or a checksum mismatch.
    """
    manifest = read_manifest(uri, storage_options)
    fs, base = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".partial-{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(manifest.files)))) as pool:
            futures = [
                pool.submit(_fetch_one, fs, f"{base}/{rel}", tmp / rel, entry, uri, rel)
                for rel, entry in manifest.files.items()
            ]
            for future in futures:
                future.result()
        (tmp / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
