"""Model versions: publish a new version to object storage; replicas follow the current one.

A versioned model (``ModelSpec(versioned=True)``) keeps its versions under its ``weights_uri``::

    <weights_uri>/versions/<version>/   one published model folder per version (never rewritten)
    <weights_uri>/current.json          which version is current (:class:`ModelVersion`)

:func:`publish_version` uploads a folder as the next version and then points ``current.json`` at
it (one object write, so a reader sees the old or the new pointer). :func:`resolve_version` turns a
versioned spec into the concrete spec of one version: its ``weights_uri`` is that version's folder,
so node caches key their copies by version. A replica that serves a versioned model watches
``current.json`` (:class:`VersionFollower`, every ``version_poll_seconds``): when it changes, the
new version is loaded beside the old one; new requests go to it once it is loaded, requests in
flight finish on the old one, which is unloaded once they have drained.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fsspec
from pydantic import BaseModel, Field, ValidationError

from serving.errors import WeightsError
from serving.spec import ModelSpec
from serving.storage import MANIFEST_NAME, publish_model

logger = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
CURRENT_NAME = "current.json"
_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class VersionExistsError(WeightsError):
    """A version of that name is published already (versions are never rewritten)."""


class ModelVersion(BaseModel):
    """One published version of a model (the content of ``current.json``).

    Attributes:
        version: the version's name (``"1"``, ``"2"``, ... when :func:`publish_version` numbers it).
        digest: sha256 of the version's checksum manifest (it names every file's sha256).
        published_at: Unix time of the publication.
    """

    version: str = Field(pattern=_VERSION_PATTERN)
    digest: str = Field(min_length=64, max_length=64)
    published_at: float


def version_uri(base_uri: str, version: str) -> str:
    """The folder URI of one version of the model whose versions live under ``base_uri``."""
    return f"{base_uri.rstrip('/')}/{VERSIONS_DIR}/{version}"


def _fs(uri: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    return fs, str(path)


def current_version(
    base_uri: str, storage_options: dict[str, Any] | None = None
) -> ModelVersion | None:
    """The model's current version, or ``None`` when none was published yet.

    Raises:
        WeightsError: ``current.json`` cannot be read or is corrupt.
    """
    fs, base = _fs(base_uri, storage_options)
    _forget_listings(fs, base)
    try:
        raw = fs.cat_file(f"{base}/{CURRENT_NAME}")
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise WeightsError(f"cannot read {base_uri}/{CURRENT_NAME}: {exc!r}") from exc
    try:
        return ModelVersion.model_validate_json(raw)
    except ValidationError as exc:
        raise WeightsError(f"corrupt {base_uri}/{CURRENT_NAME}: {exc}") from exc


def _forget_listings(fs: Any, base: str) -> None:
    """Drops fsspec's cached listings under ``base`` (s3fs caches them; versions appear later)."""
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(base)


def _next_version(fs: Any, base: str) -> str:
    """One more than the largest numbered version under ``base/versions`` ("1" when none)."""
    _forget_listings(fs, base)
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{base}/{VERSIONS_DIR}")]
    except FileNotFoundError:
        names = []
    numbers = [int(n) for n in names if n.isdigit()]
    return str(max(numbers, default=0) + 1)


def publish_version(
    local_dir: str | os.PathLike[str],
    base_uri: str,
    storage_options: dict[str, Any] | None = None,
    version: str | None = None,
    make_current: bool = True,
) -> ModelVersion:
    """Uploads a model folder as a new version and (by default) makes it the current one.

    One publisher per model at a time: two publishing at once may pick the same number (the
    second then fails with :class:`VersionExistsError`, nothing lost).

    Args:
        local_dir: the model folder (safetensors, ``config.json``, tokenizer files).
        base_uri: the folder the model's versions live under (the versioned spec's ``weights_uri``).
        storage_options: fsspec keyword arguments for ``base_uri``.
        version: the version's name; ``None`` numbers it (one more than the largest number).
        make_current: point ``current.json`` at the new version once it is uploaded.

    Returns:
        The published version.

    Raises:
        VersionExistsError: that version is published already.
        UnsafeModelFileError: a file name in the folder is not a safe model file name.
        ValueError: ``version`` is not a valid version name.
    """
    fs, base = _fs(base_uri, storage_options)
    name = version or _next_version(fs, base)
    ModelVersion(version=name, digest="0" * 64, published_at=0.0)  # validates the name
    target = version_uri(base_uri, name)
    if fs.exists(f"{base}/{VERSIONS_DIR}/{name}/{MANIFEST_NAME}"):
        raise VersionExistsError(f"version {name!r} of {base_uri} is published already")
    manifest = publish_model(local_dir, target, storage_options)
    digest = hashlib.sha256(manifest.model_dump_json(indent=1).encode()).hexdigest()
    published = ModelVersion(version=name, digest=digest, published_at=time.time())
    if make_current:
        fs.pipe_file(f"{base}/{CURRENT_NAME}", published.model_dump_json().encode())
    return published


def set_current_version(
    base_uri: str, version: str, storage_options: dict[str, Any] | None = None
) -> ModelVersion:
    """Points ``current.json`` at a version published before (a rollback, say).

    Raises:
        WeightsError: that version is not published (no manifest in its folder).
    """
    fs, base = _fs(base_uri, storage_options)
    try:
        raw = fs.cat_file(f"{base}/{VERSIONS_DIR}/{version}/{MANIFEST_NAME}")
    except FileNotFoundError:
        raise WeightsError(f"version {version!r} of {base_uri} is not published") from None
    chosen = ModelVersion(
        version=version, digest=hashlib.sha256(raw).hexdigest(), published_at=time.time()
    )
    fs.pipe_file(f"{base}/{CURRENT_NAME}", chosen.model_dump_json().encode())
    return chosen


def resolve_version(spec: ModelSpec) -> ModelSpec:
    """The concrete spec of the version ``spec`` stands for now.

    An unversioned spec is returned as it is. A versioned one pinned to ``spec.version`` gives
    that version; one that follows gives the current version. The result is unversioned, with
    ``weights_uri`` the version's folder and ``version`` its name.

    Raises:
        WeightsError: no version is published yet, or ``current.json`` is unreadable.
    """
    if not spec.versioned:
        return spec
    name = spec.version
    if name is None:
        current = current_version(spec.weights_uri, spec.storage_options)
        if current is None:
            raise WeightsError(
                f"model {spec.id!r} has no published version at {spec.weights_uri} "
                f"(no {CURRENT_NAME}; publish one with serving.publish_version)"
            )
        name = current.version
    return spec.model_copy(
        update={
            "weights_uri": version_uri(spec.weights_uri, name),
            "versioned": False,
            "version": name,
        }
    )


Upgrade = Callable[[str, ModelSpec], Awaitable[None]]


class VersionFollower:
    """Watches the current version of a replica's following models and upgrades them.

    Every ``version_poll_seconds`` (the shortest among the models) it reads ``current.json`` of
    each following model that ``loaded_version`` says is loaded; when the current version differs,
    it awaits ``upgrade(model_id, concrete_spec)`` (one upgrade at a time). A pointer that cannot
    be read is logged and tried again at the next poll; the loaded version keeps serving.
    """

    def __init__(
        self,
        specs: list[ModelSpec],
        loaded_version: Callable[[str], str | None],
        upgrade: Upgrade,
    ) -> None:
        self._following = [s for s in specs if s.versioned and s.version is None]
        self._loaded_version = loaded_version
        self._upgrade = upgrade
        self._task: asyncio.Task[None] | None = None
        self.polls = 0
        self.errors = 0

    def start(self) -> None:
        """Starts watching (on the running event loop) unless it is watching already."""
        if self._following and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stops watching."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        interval = min(s.version_poll_seconds for s in self._following)
        while True:
            await asyncio.sleep(interval)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Checks every loaded following model once and upgrades those behind."""
        self.polls += 1
        for spec in self._following:
            loaded = self._loaded_version(spec.id)
            if loaded is None:
                continue
            try:
                target = await asyncio.to_thread(resolve_version, spec)
            except WeightsError as exc:
                self.errors += 1
                logger.warning("cannot read the current version of %s: %s", spec.id, exc)
                continue
            if target.version == loaded:
                continue
            try:
                await self._upgrade(spec.id, target)
            except Exception:  # the loaded version keeps serving; the next poll tries again
                self.errors += 1
                logger.exception("upgrade of %s to version %s failed", spec.id, target.version)
