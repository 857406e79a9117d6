"""Trust in the node cache: hostile manifests, safetensors-only loading, reused folders, full disks.

Everything runs against the real SeaweedFS S3 server and tiny models made here; the only fake is
the injected disk-full fault (a write that raises ``OSError(ENOSPC)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from serving.cache import CacheConfig, ModelCache
from serving.errors import (
    DiskFullError,
    UnsafeCacheRootError,
    UnsafeModelFileError,
    WeightsError,
)
from serving.spec import ModelSpec
from serving.storage import (
    MANIFEST_NAME,
    VERIFIED_NAME,
    fetch_model,
    publish_model,
    read_manifest,
)
from tests.serving.test_cache import RecordingSink

EVIL = b"import os; os.system('echo pwned')\n"


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@dataclass
class Published:
    """A tiny model published once for the module (a bucket and a publish took ~1 s a test; copies
    within the store take milliseconds), and one client of the store."""

    fs: Any
    bucket: str
    files: dict[str, Any]  # the manifest's entries


@pytest.fixture(scope="module")
def published(s3_server: Any, tiny_model_dirs: list[Path]) -> Published:
    bucket = s3_server.new_bucket()
    manifest = publish_model(tiny_model_dirs[0], f"s3://{bucket}/base", s3_server.storage_options)
    return Published(s3_server.filesystem(), bucket, manifest.model_dump()["files"])


def _plant(s3_server: Any, names: list[str], published: Published) -> ModelSpec:
    """A model prefix of its own holding the published model (its files and manifest), whose
    manifest, written by hand, also lists ``names`` (objects planted too)."""
    fs, bucket = published.fs, published.bucket
    prefix = f"{bucket}/evil-{uuid.uuid4().hex[:8]}"
    files = dict(published.files)
    for name in files:
        fs.copy(f"{bucket}/base/{name}", f"{prefix}/{name}")
    for name in names:
        files[name] = _entry(EVIL)
        # The object the hostile entry points at, where the store accepts such a key.
        with contextlib.suppress(OSError, ValueError):
            fs.pipe_file(f"{prefix}/{name}", EVIL)
    fs.pipe_file(f"{prefix}/{MANIFEST_NAME}", json.dumps({"files": files}).encode())
    return ModelSpec(
        id="evil", weights_uri=f"s3://{prefix}", storage_options=s3_server.storage_options
    )


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------ item 9: path traversal


async def test_hostile_manifest_writes_nothing_outside_the_cache(
    s3_server: Any, published: Published, tmp_path: Path
) -> None:
    root = tmp_path / "cache"  # the fetch folder is root/.partial-<name>-<hex>/
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    absolute = tmp_path / "absolute"
    absolute.mkdir()
    names = ["../../outside/evil.pth", f"{absolute}/evil.pth"]
    spec = _plant(s3_server, names, published)
    cache = ModelCache(CacheConfig(root=str(root)))
    with pytest.raises(WeightsError) as err:
        await cache.ensure(spec)
    assert _tree(outside) == [] and _tree(absolute) == []  # nothing escaped
    assert isinstance(err.value, UnsafeModelFileError), err.value
    assert "'evil'" in err.value.message and "../../outside/evil.pth" in err.value.message
    assert _tree(root) == []  # refused before any byte was written
    assert cache.stats().models == []


@pytest.mark.parametrize(
    "name",
    [
        "../evil.pth",
        "a/../../evil.pth",
        "a/../b",
        "/etc/evil.pth",
        "a\\..\\evil.pth",
        "C:evil.pth",
        "a//b",
        "./a",
        "a/",
        "",
        "a\x00b",
        "a/\nb",
        MANIFEST_NAME,
    ],
)
def test_unsafe_manifest_names_are_refused_before_any_byte(
    s3_server: Any, published: Published, tmp_path: Path, name: str
) -> None:
    spec = _plant(s3_server, [name], published)
    with pytest.raises(UnsafeModelFileError, match="unsafe file name"):
        read_manifest(spec.weights_uri, spec.storage_options)
    with pytest.raises(UnsafeModelFileError):
        fetch_model(spec.weights_uri, tmp_path / "dest" / "m", spec.storage_options)
    assert not (tmp_path / "dest").exists() or _tree(tmp_path / "dest") == []
    assert not Path("/etc/evil.pth").exists()


def test_publish_refuses_unsafe_names(
    s3_server: Any, tiny_model_dirs: list[Path], tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "a\\b.safetensors").write_bytes(b"x")  # a legal POSIX name, unsafe elsewhere
    with pytest.raises(UnsafeModelFileError, match=r"a\\\\b.safetensors"):
        publish_model(folder, f"s3://{bucket}/m", s3_server.storage_options)
    (folder / "C:evil.safetensors").write_bytes(b"x")
    with pytest.raises(UnsafeModelFileError, match="C:evil.safetensors"):
        publish_model(folder, f"s3://{bucket}/m", s3_server.storage_options)
    assert s3_server.filesystem().find(bucket) == []  # nothing was uploaded


def test_engine_loads_safetensors_only(tiny_model_dirs: list[Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engines.transformers_engine import TransformersEngine

    pickled = tmp_path / "pickled"  # the same model with pickled (torch.save) weights only
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[0], dtype=torch.float32)
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_model_dirs[0]).save_pretrained(pickled)
    assert not list(pickled.glob("*.safetensors")) and list(pickled.glob("*.bin"))
    engine = TransformersEngine()
    try:
        with pytest.raises(WeightsError, match="safetensors"):
            asyncio.run(engine.load(str(pickled)))
    finally:
        engine.unload()


def test_vllm_engine_refuses_a_folder_without_safetensors(tmp_path: Path) -> None:
    from serving.engines.vllm_engine import VLLMEngine

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(WeightsError, match="safetensors"):
        asyncio.run(VLLMEngine().load(str(tmp_path)))
    with pytest.raises(WeightsError, match="safetensors"):
        VLLMEngine(load_format="pt")


# ------------------------------------------------------------------ item 10: reused folders


def _folder(cache_root: str) -> Path:
    (folder,) = [p for p in Path(cache_root).iterdir() if not p.name.startswith(".")]
    return folder


async def test_restart_discards_a_copy_whose_content_does_not_verify(
    s3_specs: list[ModelSpec], cache_root: str
) -> None:
    config = CacheConfig(root=cache_root)
    spec = s3_specs[0]
    await ModelCache(config).ensure(spec, lease=False)
    weights = _folder(cache_root) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    sink = RecordingSink()
    sink.holding[spec.id] = len(data)  # what placement remembers from before the restart
    reborn = ModelCache(config, sink=sink)
    assert reborn.stats().models == [] and sink.holding == {}
    got = await reborn.ensure(spec, lease=False)
    assert got.tier == "object_storage"
    expected = read_manifest(spec.weights_uri, spec.storage_options).files["model.safetensors"]
    fetched = (Path(got.path) / "model.safetensors").read_bytes()
    assert hashlib.sha256(fetched).hexdigest() == expected.sha256


@pytest.mark.parametrize("fault", ["foreign-folder", "foreign-file", "world-writable", "symlink"])
async def test_restart_discards_a_copy_not_owned_by_the_serving_user(
    s3_specs: list[ModelSpec], cache_root: str, tmp_path: Path, fault: str
) -> None:
    config = CacheConfig(root=cache_root)
    await ModelCache(config).ensure(s3_specs[0], lease=False)
    folder = _folder(cache_root)
    other = os.getuid() + 4242
    if fault in ("foreign-folder", "foreign-file") and os.getuid() != 0:
        pytest.skip("changing a file's owner needs root")
    if fault == "foreign-folder":
        os.chown(folder, other, other)
    elif fault == "foreign-file":
        os.chown(folder / "config.json", other, other)
    elif fault == "world-writable":
        os.chmod(folder, 0o777)
    else:  # a file replaced by a link to one with the same bytes elsewhere
        target = tmp_path / "elsewhere.json"
        target.write_bytes((folder / "config.json").read_bytes())
        (folder / "config.json").unlink()
        (folder / "config.json").symlink_to(target)
    reborn = ModelCache(config)
    assert reborn.stats().models == []
    assert (await reborn.ensure(s3_specs[0], lease=False)).tier == "object_storage"
    assert os.stat(_folder(cache_root)).st_uid == os.getuid()


async def test_restart_rehashes_a_copy_without_its_verified_marker(
    s3_specs: list[ModelSpec], cache_root: str
) -> None:
    config = CacheConfig(root=cache_root)
    await ModelCache(config).ensure(s3_specs[0], lease=False)
    marker = _folder(cache_root) / VERIFIED_NAME
    marker.unlink()  # as a copy made before markers existed, or cut off before its marker
    reborn = ModelCache(config)
    assert reborn.stats().models == [s3_specs[0].id]  # the checksum pass accepted it
    assert marker.is_file() and (await reborn.ensure(s3_specs[0], lease=False)).tier == "disk"


@pytest.mark.parametrize("fault", ["foreign", "shared-sticky"])
def test_cache_refuses_a_root_others_control(tmp_path: Path, fault: str) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    if fault == "foreign":
        if os.getuid() != 0:
            pytest.skip("changing a folder's owner needs root")
        os.chown(root, os.getuid() + 4242, os.getuid() + 4242)
    else:
        os.chmod(root, 0o1777)  # like /tmp
    with pytest.raises(UnsafeCacheRootError, match=str(root)):
        ModelCache(CacheConfig(root=str(root)))


def test_cache_closes_its_own_root_to_others(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    os.chmod(root, 0o777)  # made under a umask of 000
    ModelCache(CacheConfig(root=str(root)))
    assert root.stat().st_mode & 0o022 == 0


# ------------------------------------------------------------------ item 10: full disks


class _DiskFull:
    """Makes writes of ``model.safetensors`` below ``root`` fail with ENOSPC (``times`` times)."""

    def __init__(self, root: str, times: int) -> None:
        self.root = str(Path(root).resolve())
        self.left = times
        self.raised = 0
        self._open = Path.open

    def install(self, monkeypatch: pytest.MonkeyPatch) -> _DiskFull:
        """Patches ``Path.open`` (a plain function, so that it binds to the path)."""

        def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = self._open(path, mode, *args, **kwargs)
            inside = str(path.resolve()).startswith(self.root)
            writes = "w" in mode or "x" in mode
            if inside and writes and path.name == "model.safetensors" and self.left:
                self.left -= 1
                return _FullHandle(handle, self)
            return handle

        monkeypatch.setattr(Path, "open", open_)
        return self


class _FullHandle:
    def __init__(self, handle: Any, fault: _DiskFull) -> None:
        self._handle = handle
        self._fault = fault

    def write(self, data: bytes) -> int:
        self._fault.raised += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


async def test_disk_full_evicts_the_least_recently_used_model_and_retries(
    s3_specs: list[ModelSpec], cache_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=1 << 30))
    a, b, c = s3_specs[:3]
    await cache.ensure(a, lease=False)
    await cache.ensure(b, lease=False)
    fault = _DiskFull(cache_root, times=1).install(monkeypatch)
    got = await cache.ensure(c, lease=False)
    assert fault.raised == 1 and got.tier == "object_storage"
    stats = cache.stats()
    assert stats.models == [b.id, c.id] and stats.evictions == 1
    assert not any(p.name.startswith(".partial-") for p in Path(cache_root).iterdir())


async def test_disk_full_with_nothing_left_to_evict_says_disk_full(
    s3_specs: list[ModelSpec], cache_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=1 << 30))
    a, b, c = s3_specs[:3]
    await cache.ensure(a)  # leased: loading engines keep their copy
    await cache.ensure(b, lease=False)
    _DiskFull(cache_root, times=1000).install(monkeypatch)
    with pytest.raises(DiskFullError, match="disk full") as err:
        await cache.ensure(c)
    assert "cannot read" not in err.value.message and "'tiny-2'" in err.value.message
    assert err.value.status == 507 and err.value.code == "disk_full"
    stats = cache.stats()
    assert stats.models == [a.id] and stats.failures == 1  # b was evicted to try, a kept
    assert sorted(p.name for p in Path(cache_root).iterdir()) == [_folder(cache_root).name]
