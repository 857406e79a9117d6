"""Write-once objects on one fsspec filesystem: exclusive create, checksummed reads, listings.

Nothing here knows about agents or checkpoints. Every object is created once and never overwritten:
locally an unnamed file (``O_TMPFILE``; a named temporary where the filesystem lacks it) is written
and fsynced, then hard-linked to its name (``linkat`` fails if the name exists) and the directory is
fsynced; on S3 a ``PUT`` with ``If-None-Match: *``; on
``memory://`` a locked check-and-set. Locally a name can also be reserved ahead (created empty and
exclusively, in the mode ``RESERVED_MODE``) and filled once later (write + ``fdatasync``): the exclusive
part is done by the reservation, so the fill needs no fsync of the folder.
Checksums detect corruption (not tampering): ``xxh3_128:<hex>``
(xxHash XXH3, 128 bits); a bare hex digest is a sha256 (an older format that still verifies).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import hashlib
import inspect
import logging
import mmap
import os
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import fsspec
import xxhash
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from academy_ray.exception import CheckpointError, CorruptCheckpointError, StorageUnavailableError
from academy_ray.state import EncodedState, StateEncodingError

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20
MEMORY_LOCK = threading.Lock()
_PROBE_DIR = ".academy-probes"
RESERVED_MODE = 0o200
"""The mode of an empty object made by ``ObjectBackend.reserve`` (owner may write, nobody reads)."""
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_WRITTEN_MODE = 0o644 & ~_UMASK  # what an ordinary create gets
# Unnamed temporary files (Linux O_TMPFILE + linkat through /proc); turned off at the first refusal.
_TMPFILE_WORKS = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def is_precondition_failed(exc: BaseException) -> bool:
    """True for an S3 conditional-create refusal (HTTP 412), however s3fs wraps it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {}) or {}
            status = (response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
            if error.get("Code") in ("PreconditionFailed", "412") or status == 412:
                return True
        text = f"{type(seen).__name__} {seen}"
        if "PreconditionFailed" in text or "pre-conditions you specified did not hold" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unavailable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError, TimeoutError, ConnectionError]
    try:
        import botocore.exceptions as bex

        types += [bex.BotoCoreError, bex.ClientError]
    except ImportError:  # pragma: no cover - s3 extra not installed
        pass
    try:
        import aiohttp

        types.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def probe_conditional_create(fs: fsspec.AbstractFileSystem, root: str) -> str:
    """Creates one probe object twice with ``mode="create"``; "" when the second is refused, else why not."""
    pipe = getattr(fs, "_pipe_file", None) or fs.pipe_file
    if "mode" not in inspect.signature(pipe).parameters:
        return (
            f"this s3fs ({getattr(sys.modules.get('s3fs'), '__version__', '?')}) cannot make conditional "
            "writes (mode='create' needs s3fs 2024.12 or later): upgrade s3fs"
        )
    path = f"{root}/{_PROBE_DIR}/{uuid.uuid4().hex}"
    try:
        fs.pipe_file(path, b"1", mode="create")
        try:
            fs.pipe_file(path, b"2", mode="create")
        except FileExistsError:
            return ""
        except Exception as exc:
            if is_precondition_failed(exc):
                return ""
            raise
        return (
            "the server overwrote an existing object despite If-None-Match: * (no conditional writes), "
            "so epoch fencing would not hold; use a server that supports them (AWS S3, SeaweedFS, "
            "MinIO), or accept the risk with CheckpointPolicy(allow_unsafe_store=True)"
        )
    finally:
        try:
            fs.rm_file(path)
        except Exception:
            logger.debug("could not remove probe %s", path, exc_info=True)


def ls_names(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    try:
        if isinstance(fs, LocalFileSystem):
            entries = os.listdir(path)
        else:
            fs.invalidate_cache(path)  # listings must be fresh: fencing depends on them
            entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]


@contextmanager
def storage_errors(uri: str, op: str) -> Iterator[None]:
    try:
        yield
    except (CheckpointError, StateEncodingError):
        raise
    except (
        FileNotFoundError
    ) as exc:  # expected ones are handled inside: here a bucket or root is missing
        raise StorageUnavailableError(
            f"checkpoint storage {uri} failed during {op}: not found: {exc}"
        ) from exc
    except FileExistsError as exc:  # pragma: no cover - conflicts are handled inside
        raise CheckpointError(f"unexpected write conflict in {uri} during {op}: {exc}") from exc
    except unavailable_types() as exc:
        if is_precondition_failed(exc):
            raise FileExistsError(str(exc)) from exc
        raise StorageUnavailableError(
            f"checkpoint storage {uri} failed during {op}: {type(exc).__name__}: {exc}"
        ) from exc


#: Algorithm of the checksums this version writes (recorded in the manifest as ``<algorithm>:<hex>``).
CHECKSUM_ALGORITHM = "xxh3_128"
_LEGACY_ALGORITHM = "sha256"  # a checksum without an algorithm prefix
HASHES: dict[str, Callable[[], Any]] = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}


def split_checksum(checksum: str) -> tuple[str, str]:
    """``"algo:hex"`` -> ``(algo, hex)``; a bare hex digest (old manifests) is a sha256."""
    algorithm, sep, digest = checksum.partition(":")
    return (algorithm, digest) if sep else (_LEGACY_ALGORITHM, checksum)


def checksum_of(data: Any, algorithm: str = CHECKSUM_ALGORITHM) -> str:
    """The checksum of a bytes-like object, as recorded in manifests."""
    hasher = Hasher(algorithm, threaded=False)
    hasher.update(memoryview(data))
    return hasher.hexdigest()


class Hasher:
    """A payload checksum whose large updates run in a helper thread, in order, beside the caller's I/O.

    ``hexdigest`` gives ``<algorithm>:<hex>``, except for sha256 whose bare hex is the legacy format.
    """

    def __init__(self, algorithm: str = CHECKSUM_ALGORITHM, *, threaded: bool) -> None:
        try:
            self._hash = HASHES[algorithm]()
        except KeyError:
            raise CorruptCheckpointError(f"unknown checksum algorithm {algorithm!r}") from None
        self.algorithm = algorithm
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ckpt-hash")
            if threaded
            else None
        )
        self._pending: list[concurrent.futures.Future[None]] = []

    def update(self, chunk: memoryview) -> None:
        if self._pool is None:
            self._hash.update(chunk)
        else:
            # Both xxhash and hashlib release the GIL on large buffers: this runs beside the I/O.
            self._pending.append(self._pool.submit(self._hash.update, chunk))

    def hexdigest(self) -> str:
        self.close()
        digest: str = self._hash.hexdigest()
        return digest if self.algorithm == _LEGACY_ALGORITHM else f"{self.algorithm}:{digest}"

    def close(self) -> None:
        if self._pool is not None:
            try:
                for fut in self._pending:
                    fut.result()
            finally:
                self._pool.shutdown(wait=True)
                self._pool = None


_THREADED_MIN = 4 << 20
_RANGED_MIN = 64 << 20  # remote payloads at least this big are fetched as concurrent ranges
_RANGE = 32 << 20
_RANGE_WORKERS = 4


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux ``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)``: starts writeback of a range, no wait.

    Used to let the disk write chunk ``i`` while chunk ``i + 1`` is copied into the page cache, so the
    final ``fsync`` (which still provides the durability) has little left to do.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE; a failure only loses the overlap

    return start_writeback


_START_WRITEBACK = _load_sync_file_range()


def empty_buffer(size: int) -> memoryview:
    """A writable buffer that costs nothing until written (``bytearray(n)`` would zero every page first).

    A private anonymous mapping, advised to use huge pages (on Linux): the read that fills it takes one
    page fault per 2 MiB instead of per 4 KiB, which makes reading a large payload into it several times
    faster than reading it into a fresh ``bytes`` (what a raw ``cat_file`` does).
    """
    if size == 0:
        return memoryview(bytearray())
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    if size >= _HUGE_MIN and hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages
            buf.madvise(mmap.MADV_HUGEPAGE)
    return memoryview(buf)


_HUGE_MIN = 4 << 20


def _hash_views(views: Iterator[memoryview], sink: Callable[[memoryview], None] | None) -> str:
    """Checksums (and optionally writes) a stream of views, hashing chunk i while chunk i + 1 is written."""
    all_views = list(views)
    hasher = Hasher(threaded=sink is not None and sum(v.nbytes for v in all_views) >= _THREADED_MIN)
    try:
        for view in all_views:
            for start in range(0, view.nbytes, _CHUNK):
                chunk = view[start : start + _CHUNK]
                hasher.update(chunk)
                if sink is not None:
                    sink(chunk)
        return hasher.hexdigest()
    finally:
        hasher.close()


class ObjectBackend:
    """Write-once object operations on one fsspec filesystem."""

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs
        self.local = isinstance(self.fs, LocalFileSystem)
        self.memory = isinstance(self.fs, MemoryFileSystem)

    def create(self, path: str, data: EncodedState | bytes, *, unique: bool = False) -> str:
        """Creates ``path`` with ``data`` unless it exists (FileExistsError). Returns the checksum.

        ``unique=True`` promises that nobody else uses this name (a random one): no exclusivity check.
        """
        views: Callable[[], Iterator[memoryview]]
        if isinstance(data, EncodedState):
            views = data.iter_views
        else:
            blob = data

            def views() -> Iterator[memoryview]:
                return iter([memoryview(blob)])

        if self.local:
            return self._create_local(path, views, unique=unique)
        body = data.to_bytes() if isinstance(data, EncodedState) else data
        hasher = Hasher(threaded=len(body) >= _THREADED_MIN)  # hashes while the upload runs
        try:
            hasher.update(memoryview(body))
            if self.memory:
                with MEMORY_LOCK:
                    if self.fs.exists(path):
                        raise FileExistsError(path)
                    self.fs.pipe_file(path, body)
                return hasher.hexdigest()
            try:
                if unique:  # a multipart upload (> 100 MB) cannot be conditional on every S3 server
                    self.fs.pipe_file(path, body)
                else:
                    self.fs.pipe_file(path, body, mode="create")
            except FileExistsError:
                raise
            except Exception as exc:
                if is_precondition_failed(exc):
                    raise FileExistsError(path) from exc
                raise
            return hasher.hexdigest()
        finally:
            hasher.close()

    def _create_local(
        self, path: str, views: Callable[[], Iterator[memoryview]], *, unique: bool = False
    ) -> str:
        directory = os.path.dirname(path)
        _ensure_folder(directory)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            digest = None
            if _TMPFILE_WORKS:
                digest = self._create_anonymous(dir_fd, path, views)
            if digest is None:
                digest = self._create_named_temporary(directory, path, views(), unique=unique)
            with suppress(OSError):
                os.fsync(dir_fd)
            return digest
        finally:
            os.close(dir_fd)

    @staticmethod
    def _write_all(fd: int, views: Iterator[memoryview]) -> str:
        """Writes ``views`` to ``fd``, hashing them; fsyncs; returns the checksum."""
        offset = 0

        def write(chunk: memoryview) -> None:
            nonlocal offset
            start, view = offset, chunk
            while view.nbytes:
                view = view[os.write(fd, view) :]
            offset = start + chunk.nbytes
            if _START_WRITEBACK is not None and chunk.nbytes >= _CHUNK:
                _START_WRITEBACK(fd, start, chunk.nbytes)

        digest = _hash_views(views, write)
        os.fsync(fd)
        return digest

    def _create_anonymous(
        self, dir_fd: int, path: str, views: Callable[[], Iterator[memoryview]]
    ) -> str | None:
        """Linux: an unnamed file (``O_TMPFILE``) in the folder ``dir_fd`` written, fsynced and linked to
        ``path`` (``linkat`` refuses an existing name). No temporary name to remove, so nothing is left
        behind by a crash. Returns None, leaving no file, where the filesystem cannot make or link
        unnamed files (then named temporaries are used from now on)."""
        global _TMPFILE_WORKS
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o644, dir_fd=dir_fd)
        except OSError:  # e.g. EOPNOTSUPP on this filesystem
            _TMPFILE_WORKS = False
            return None
        try:
            digest = self._write_all(fd, views())
            try:
                # ``src_dir_fd`` makes Python call linkat(.., AT_SYMLINK_FOLLOW): a link to the file itself.
                os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=dir_fd)
            except FileExistsError:
                raise
            except OSError:
                logger.info(
                    "linking unnamed files fails here; using named temporaries", exc_info=True
                )
                _TMPFILE_WORKS = False
                return None
            return digest
        finally:
            os.close(fd)

    def _create_named_temporary(
        self, directory: str, path: str, views: Iterator[memoryview], *, unique: bool
    ) -> str:
        """Portable: a temporary file in the same folder, fsynced, then hard-linked to ``path`` (``link``
        refuses an existing name; ``unique`` names are renamed instead), the temporary name removed."""
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                digest = self._write_all(fd, views)
            finally:
                os.close(fd)
            if unique:
                os.rename(tmp, path)
            else:
                os.link(tmp, path)  # atomic, refuses an existing name
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest

    def reserve(self, paths: Sequence[str]) -> int:
        """Local only: creates ``paths`` empty and exclusively, in order, and makes their names durable
        with one fsync of their folder (all in one folder).

        A reserved name is owned by its creator: it fills it once with :meth:`fill`. Readers treat an
        empty object as "not written". Reserving ahead takes the folder's fsync (a journal commit) off
        each write: a fill makes only its own bytes durable.

        Returns:
            How many were created: a prefix of ``paths``, which ends at the first name that exists.
        """
        if not paths:
            return 0
        directory = os.path.dirname(paths[0])
        _ensure_folder(directory)
        created = 0
        try:
            for path in paths:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, RESERVED_MODE)
                try:
                    # Whatever the umask: this mode marks a reservation.
                    os.fchmod(fd, RESERVED_MODE)
                finally:
                    os.close(fd)
                created += 1
        except FileExistsError:
            pass
        finally:
            if created:
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return created

    def fill(self, path: str, body: bytes) -> None:
        """Local only: writes ``body`` into the empty object ``path`` made by :meth:`reserve` and makes it
        durable (``fdatasync``: the name is durable already).

        Raises:
            FileNotFoundError: The reservation is gone (deleted meanwhile).
            FileExistsError: It is not empty: the object was written already.
        """
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size:
                raise FileExistsError(path)
            view = memoryview(body)
            offset = 0
            while offset < view.nbytes:
                offset += os.pwrite(fd, view[offset:], offset)
            _datasync(fd)
            # After the data is durable: an empty file in the written mode is a lost write, never a
            # reservation (the mode change itself needs no sync: a non-empty file counts as written).
            os.fchmod(fd, _WRITTEN_MODE)
        finally:
            os.close(fd)

    def is_reserved(self, path: str) -> bool:
        """Whether ``path`` is a name reserved by :meth:`reserve` whose fill is not durable yet (local only).

        A fill changes the mode only after its ``fdatasync``, so content read from a reserved-mode object
        that does not parse was never acknowledged (a fill in progress, or one cut short by a crash).
        """
        if not self.local:
            return False
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return False
        return stat.S_IMODE(status.st_mode) == RESERVED_MODE

    def read(
        self, path: str, expected_size: int | None = None, algorithm: str = CHECKSUM_ALGORITHM
    ) -> tuple[memoryview, str]:
        """Reads a whole object into a writable buffer; returns it with its checksum (``algorithm``)."""
        if self.local:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                view = empty_buffer(size)
                hasher = Hasher(algorithm, threaded=size >= _THREADED_MIN)
                try:
                    pos = 0
                    while pos < size:
                        n = f.readinto(view[pos : pos + _CHUNK])
                        if not n:
                            break
                        hasher.update(view[pos : pos + n])
                        pos += n
                    digest = hasher.hexdigest()
                finally:
                    hasher.close()
                return view[:pos], digest
        if expected_size is not None and expected_size >= _RANGED_MIN and not self.memory:
            try:
                return self._read_ranged(path, expected_size, algorithm)
            except FileNotFoundError:
                raise
            except Exception:
                logger.debug("ranged read of %s failed, reading it whole", path, exc_info=True)
        buf = bytearray(self.fs.cat_file(path))
        return memoryview(buf), checksum_of(buf, algorithm)

    def _read_ranged(self, path: str, size: int, algorithm: str) -> tuple[memoryview, str]:
        """Large remote objects: concurrent ranged GETs into one buffer, hashed in order as they land."""
        view = empty_buffer(size)
        starts = list(range(0, size, _RANGE))
        hasher = Hasher(algorithm, threaded=True)
        pos = 0
        try:
            with concurrent.futures.ThreadPoolExecutor(
                _RANGE_WORKERS, thread_name_prefix="ckpt-get"
            ) as pool:
                futures = [
                    pool.submit(self.fs.cat_file, path, start=start, end=min(start + _RANGE, size))
                    for start in starts
                ]
                try:
                    for start, fut in zip(starts, futures, strict=True):
                        chunk = fut.result()
                        view[start : start + len(chunk)] = chunk
                        hasher.update(view[start : start + len(chunk)])
                        pos = start + len(chunk)
                        if len(chunk) < min(_RANGE, size - start):
                            break  # the object is shorter than its manifest says
                finally:
                    for fut in futures:
                        fut.cancel()
            digest = hasher.hexdigest()
        finally:
            hasher.close()
        return view[:pos], digest

    def read_small(self, path: str) -> bytes:
        if self.local:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except PermissionError:
                if self.is_reserved(path):  # not readable by design: no durable content in it yet
                    return b""
                raise
        return bytes(self.fs.cat_file(path))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists now (local and memory stores: no listing cache in the way)."""
        if self.local:
            return os.path.lexists(path)
        with MEMORY_LOCK if self.memory else contextlib.nullcontext():
            return bool(self.fs.exists(path))

    def names(self, path: str) -> list[str]:
        return ls_names(self.fs, path)

    def remove(self, path: str) -> None:
        try:
            if self.local:
                os.unlink(path)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass


def _ensure_folder(directory: str) -> None:
    """Creates ``directory`` if missing, with its new name made durable in its parent."""
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        fsync_dir(os.path.dirname(directory))


def _datasync(fd: int) -> None:
    """Makes a file's data (and its size) durable: ``fdatasync`` where the system has it."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
