"""Model folders in object storage: publish with a checksum manifest, fetch with verification.

Every file name in a manifest must be a normalised relative POSIX path inside the model folder
(:func:`unsafe_name_reason`); a manifest naming anything else is refused whole, before any byte is
written, so a hostile manifest cannot write outside the destination. A fetched folder carries a
verified marker written after the checksum pass, and :func:`verify_local_copy` decides whether a
folder found on disk may be reused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shutil
import stat
import unicodedata
import uuid
from collections.abc import Collection, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, Field, ValidationError

from serving.errors import DiskFullError, UnsafeModelFileError, WeightsError

MANIFEST_NAME = "serving-manifest.json"
RESERVED_PREFIX = ".serving-"
"""Top-level names starting with this are the cache's own files, never a model's."""
VERIFIED_NAME = ".serving-verified.json"
_CHUNK = 8 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


class FileStamp(BaseModel):
    """Size and modification time of a local file when its checksum was verified."""

    size: int
    mtime_ns: int


class VerifiedMarker(BaseModel):
    """Written into a local copy after the checksum pass (``.serving-verified.json``).

    Attributes:
        manifest_sha256: sha256 of the manifest file's bytes.
        files: every other file of the folder (the manifest included) as it was when verified.
    """

    manifest_sha256: str
    files: dict[str, FileStamp]


# ----------------------------------------------------------------------------- file names


def unsafe_name_reason(rel: str) -> str | None:
    """Why ``rel`` is not a safe file name of a model folder, or ``None`` when it is safe.

    A safe name is a non-empty relative POSIX path whose components are neither empty, ``.`` nor
    ``..``, without backslashes, colons (drive letters), control characters or NUL, that equals
    its own ``posixpath.normpath`` and NFC form, and that does not use a reserved name.
    """
    if not isinstance(rel, str) or not rel:
        return "empty name"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in rel):
        return "control character or NUL"
    if "\\" in rel:
        return "backslash"
    if ":" in rel:
        return "colon (drive letter)"
    if rel.startswith("/"):
        return "absolute path"
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "empty, '.' or '..' component"
    if posixpath.normpath(rel) != rel or unicodedata.normalize("NFC", rel) != rel:
        return "name does not normalise to itself"
    if rel == MANIFEST_NAME or parts[0].startswith(RESERVED_PREFIX):
        return "reserved name"
    return None


def check_names(names: Collection[str], where: str) -> None:
    """Raises :class:`UnsafeModelFileError` naming ``where`` and the first unsafe name."""
    for rel in names:
        reason = unsafe_name_reason(rel)
        if reason is not None:
            raise UnsafeModelFileError(
                f"{where}: unsafe file name {rel!r} ({reason}); the model is refused whole"
            )


def _where(uri: str, model_id: str | None) -> str:
    return f"model {model_id!r} at {uri}" if model_id else uri


def _inside(base: Path, rel: str) -> Path:
    """``base / rel`` after checking that it resolves (links followed) to a path in ``base``."""
    real_base = base.resolve(strict=True)
    target = base / rel
    if not target.resolve().is_relative_to(real_base):
        raise UnsafeModelFileError(f"{rel!r} leads out of {base} (a symbolic link?)")
    return target


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def build_manifest(local_dir: str | os.PathLike[str]) -> Manifest:
    """Hashes every file below ``local_dir`` (except a manifest) into a :class:`Manifest`.

    Raises:
        UnsafeModelFileError: a file name is not a safe model file name.
        ValueError: the folder holds no files.
    """
    root = Path(local_dir)
    files: dict[str, FileEntry] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            rel = path.relative_to(root).as_posix()
            check_names([rel], f"cannot publish {root}")
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

    Raises:
        UnsafeModelFileError: a file name in the folder is not a safe model file name (nothing is
            uploaded then).
    """
    manifest = build_manifest(local_dir)
    fs, base = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    for rel in manifest.files:
        parent = f"{base}/{rel}".rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(Path(local_dir) / rel), f"{base}/{rel}")
    fs.pipe_file(f"{base}/{MANIFEST_NAME}", manifest.model_dump_json(indent=1).encode())
    return manifest


def read_manifest(
    uri: str, storage_options: dict[str, Any] | None = None, model_id: str | None = None
) -> Manifest:
    """Reads and validates a model folder's manifest, file names included.

    Args:
        uri: the model folder's fsspec URI.
        storage_options: fsspec keyword arguments for ``uri``.
        model_id: the model's id, for error messages.

    Raises:
        UnsafeModelFileError: the manifest names a file outside the model folder.
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
        manifest = Manifest.model_validate(json.loads(raw))
    except (ValidationError, ValueError) as exc:
        raise WeightsError(f"corrupt manifest at {uri}/{MANIFEST_NAME}: {exc}") from exc
    check_names(manifest.files, _where(uri, model_id))
    return manifest


def _create(path: Path) -> Any:
    """Opens a new file (mode 0644 whatever the umask) for writing.

    Fails if anything, a symbolic link included, is there already.
    """
    handle = path.open("xb")
    os.fchmod(handle.fileno(), 0o644)
    return handle


def _fetch_one(fs: Any, src: str, base: Path, entry: FileEntry, uri: str, rel: str) -> None:
    dst = _inside(base, rel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst = _inside(base, rel)  # again, now that the folders exist
    digest = hashlib.sha256()
    size = 0
    try:
        with fs.open(src, "rb", block_size=_CHUNK) as source, _create(dst) as sink:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
    except FileNotFoundError:
        raise WeightsError(f"model file missing in storage: {uri}/{rel}") from None
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"disk full: no space left for {dst} ({uri}/{rel})") from exc
        raise WeightsError(f"cannot read {uri}/{rel}: {exc!r}") from exc
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise WeightsError(
            f"checksum mismatch for {uri}/{rel}: expected {entry.size} bytes sha256 "
            f"{entry.sha256[:12]}..., got {size} bytes sha256 {digest.hexdigest()[:12]}..."
        )


def _write_new(path: Path, data: bytes) -> None:
    with _create(path) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _download_all(
    fs: Any, base: str, tmp: Path, manifest: Manifest, uri: str, workers: int
) -> None:
    """Fetches every file into ``tmp``; the first failure cancels the files not started yet."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(manifest.files))))
    try:
        futures = [
            pool.submit(_fetch_one, fs, f"{base}/{rel}", tmp, entry, uri, rel)
            for rel, entry in manifest.files.items()
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _seal(folder: Path) -> None:
    """Takes group and world write permission off ``folder`` and everything in it."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o022:
            path.chmod(stat.S_IMODE(mode) & ~0o022)


def write_verified_marker(folder: Path) -> None:
    """Records every file of ``folder`` (verified just now) in its :class:`VerifiedMarker`."""
    stamps = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and rel != VERIFIED_NAME:
            stamps[rel] = FileStamp(size=st.st_size, mtime_ns=st.st_mtime_ns)
    marker = VerifiedMarker(
        manifest_sha256=_sha256_file(folder / MANIFEST_NAME), files=stamps
    ).model_dump_json(indent=1)
    fresh = folder / f"{VERIFIED_NAME}.{uuid.uuid4().hex[:8]}"
    _write_new(fresh, marker.encode())
    os.replace(fresh, folder / VERIFIED_NAME)


def fetch_model(
    uri: str,
    dest: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    max_workers: int = 4,
    extra_files: Mapping[str, bytes] | None = None,
    model_id: str | None = None,
) -> Manifest:
    """Downloads a model folder to ``dest``, verifying every file's size and sha256.

    The files land in a temporary sibling folder that is renamed to ``dest`` only once all are
    verified, so ``dest`` either holds a complete, verified copy or does not exist. Every file
    name is checked before the first byte is written; the copy gets a verified marker and no
    group or world write permission.

    Args:
        uri: the model folder's fsspec URI.
        dest: the local folder to create (replaced if it exists).
        storage_options: fsspec keyword arguments for ``uri``.
        max_workers: files fetched at the same time.
        extra_files: small files written beside the model's (names must start with
            :data:`RESERVED_PREFIX`); the verified marker covers them too.
        model_id: the model's id, for error messages.

    Raises:
        UnsafeModelFileError: the manifest names a file outside the model folder.
        DiskFullError: the disk is full (the partial copy is removed).
        WeightsError: missing manifest or file, or a checksum mismatch.
    """
    manifest = read_manifest(uri, storage_options, model_id)
    extra = dict(extra_files or {})
    bad = [n for n in extra if not n.startswith(RESERVED_PREFIX) or "/" in n or n == VERIFIED_NAME]
    if bad:
        raise ValueError(f"extra file names must start with {RESERVED_PREFIX!r}: {bad}")
    fs, base = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    target = Path(dest)
    tmp = target.parent / f".partial-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(mode=0o700)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"disk full: cannot create {tmp}") from exc
        raise
    try:
        _download_all(fs, base, tmp, manifest, uri, max_workers)
        _write_new(tmp / MANIFEST_NAME, manifest.model_dump_json(indent=1).encode())
        for name, data in extra.items():
            _write_new(tmp / name, data)
        _seal(tmp)
        write_verified_marker(tmp)
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError(f"disk full: no space left for {tmp}") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ----------------------------------------------------------------------------- local copies


def _owned_tree(folder: Path) -> dict[str, os.stat_result]:
    """The regular files below ``folder`` (by relative name) after checking every entry.

    Raises:
        WeightsError: an entry is a link or special file, is not owned by this process's user,
            or is writable by group or others.
    """
    uid = os.getuid()
    files: dict[str, os.stat_result] = {}
    if not stat.S_ISDIR(folder.lstat().st_mode):  # before walking it: a link is never followed
        raise WeightsError(f"{folder} is not a folder (a link?)")
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        rel = path.relative_to(folder).as_posix()
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise WeightsError(f"{path} is a link or special file")
        if st.st_uid != uid:
            raise WeightsError(f"{path} belongs to uid {st.st_uid}, not to this user ({uid})")
        if st.st_mode & 0o022:
            raise WeightsError(f"{path} is writable by group or others")
        if stat.S_ISREG(st.st_mode):
            files[rel] = st
    return files


def _marker_holds(folder: Path, files: dict[str, os.stat_result], raw_manifest: bytes) -> bool:
    try:
        marker = VerifiedMarker.model_validate_json((folder / VERIFIED_NAME).read_bytes())
    except (OSError, ValueError):
        return False
    if marker.manifest_sha256 != hashlib.sha256(raw_manifest).hexdigest():
        return False
    if set(marker.files) != set(files) - {VERIFIED_NAME}:
        return False
    return all(
        files[rel].st_size == s.size and files[rel].st_mtime_ns == s.mtime_ns
        for rel, s in marker.files.items()
    )


def verify_local_copy(folder: str | os.PathLike[str], extra: Collection[str] = ()) -> Manifest:
    """Checks that a local model folder may be reused, and returns its manifest.

    The folder and everything in it must be regular files and folders (no links) owned by this
    process's user and not writable by group or others; it must hold exactly the manifest's files
    (plus the manifest, the verified marker and the ``extra`` names). The content is trusted when
    the verified marker still matches every file's size and modification time; otherwise every
    file's sha256 is checked against the manifest again (and the marker rewritten).

    Raises:
        WeightsError: the folder fails a check (the message says which).
    """
    root = Path(folder)
    files = _owned_tree(root)
    if MANIFEST_NAME not in files:
        raise WeightsError(f"{root} has no {MANIFEST_NAME}")
    raw = (root / MANIFEST_NAME).read_bytes()
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValueError as exc:
        raise WeightsError(f"corrupt manifest in {root}: {exc}") from exc
    check_names(manifest.files, str(root))
    allowed = set(manifest.files) | {MANIFEST_NAME, VERIFIED_NAME} | set(extra)
    if missing := set(manifest.files) - set(files):
        raise WeightsError(f"{root} lacks {sorted(missing)}")
    if unknown := set(files) - allowed:
        raise WeightsError(f"{root} holds files no manifest lists: {sorted(unknown)}")
    if _marker_holds(root, files, raw):
        return manifest
    for rel, entry in manifest.files.items():
        if files[rel].st_size != entry.size or _sha256_file(root / rel) != entry.sha256:
            raise WeightsError(f"checksum mismatch for {root / rel}")
    write_verified_marker(root)
    return manifest
