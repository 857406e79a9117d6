"""API keys per user or project: stored hashed, loaded from a file, reloaded when the file changes.

A key file lists keys by id with the SHA-256 of the secret, never the secret itself (make entries with
``python -m serving new-key``)::

    {"keys": [
      {"id": "alice", "sha256": "<64 hex digits>", "requests_per_minute": 60, "tokens_per_minute": 20000},
      {"id": "lab-b", "sha256": "<64 hex digits>", "project": "mof", "revoked": true}
    ]}

JSON, TOML (``[[keys]]`` tables) or YAML, told by the file's suffix. The secrets are random
(``secrets.token_urlsafe(32)``: 256 bits), so an unsalted SHA-256 is enough to make a leaked key
file useless: there is no dictionary to try. A request's key is hashed once and looked up by
digest; the secret is never logged, exported, or kept beyond that.

:class:`KeyRing` holds the keys one ingress accepts. It re-reads the file when its identity changes
(inode, size, modification time), checked at most once per ``reload_interval_s`` on the request path
(one ``stat``): adding or revoking a key needs no restart. A file that fails to parse is reported
in the log and the previous keys stay in force; at start it is a :class:`KeyFileError`. Write the
file by renaming a complete copy over it (editors and ``python -m serving new-key --file`` do).

Ray-free: imported by the ingress, the CLI and the tests alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.errors import AuthenticationError, KeyFileError

logger = logging.getLogger(__name__)

MAX_AUTHORIZATION_BYTES = 512
"""Longest ``Authorization`` header looked at; a longer one is refused before any hashing."""

MAX_KEY_FILE_BYTES = 16 << 20
"""Largest key file read (about 100,000 keys)."""

KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
"""Key ids: short and plain, since they become metric labels."""

SHARED_KEY_ID = "default"
"""The id of ``ServingConfig.api_key`` (the single shared key) among the keys."""

ANONYMOUS_KEY_ID = "anonymous"
"""The caller's id when the server requires no key at all."""


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest a key file stores for ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyLimits(BaseModel):
    """Per-key limits (``None``: no limit).

    Attributes:
        requests_per_minute: requests admitted per minute (a bucket of this size, refilled evenly).
        tokens_per_minute: prompt plus generated tokens per minute; a request reserves its
            ``max_tokens`` when admitted and is charged what it used when it ends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class ApiKey(BaseModel):
    """One key of a key file.

    Attributes:
        id: the key's public name (usage and metrics are counted by it, never by the secret).
        sha256: SHA-256 hex digest of the secret (:func:`hash_key`).
        project: free text (who the key belongs to).
        revoked: a revoked key is refused with ``401``.
        requests_per_minute: this key's limit (``None``: the server's default).
        tokens_per_minute: this key's limit (``None``: the server's default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=KEY_ID_PATTERN)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    project: str | None = Field(default=None, max_length=200)
    revoked: bool = False
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)

    def limits(self, defaults: KeyLimits) -> KeyLimits:
        """This key's limits, the server's ``defaults`` where it sets none."""
        return KeyLimits(
            requests_per_minute=self.requests_per_minute or defaults.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute or defaults.tokens_per_minute,
        )


class KeyFile(BaseModel):
    """A key file's contents: ids and hashes unique."""

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> KeyFile:
        for field in ("id", "sha256"):
            seen: set[str] = set()
            for key in self.keys:
                value = getattr(key, field)
                if value in seen:
                    shown = value if field == "id" else f"of key {key.id!r}"
                    raise ValueError(f"duplicate {field} {shown}")
                seen.add(value)
        return self


class Caller(BaseModel):
    """Who a request comes from: a key's id and its limits (what the rest of the ingress sees)."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    limits: KeyLimits = KeyLimits()


def _parse(path: Path, raw: bytes) -> Any:
    suffix = path.suffix.lower()
    text = raw.decode()
    if suffix == ".toml":
        return tomllib.loads(text)
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def load_key_file(path: str | os.PathLike[str]) -> KeyFile:
    """Reads and validates a key file (JSON, or TOML / YAML by suffix).

    Raises:
        KeyFileError: the file is missing, too large, not valid JSON/TOML/YAML, or an entry is
            invalid; the message names the file and the first problem (never a secret: the file
            holds none, and values are not echoed).
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {file}: {exc.strerror or exc}") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {file} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        data = _parse(file, raw)
    except (ValueError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeyFileError(f"key file {file} is malformed: {str(exc)[:200]}") from None
    except Exception as exc:  # yaml's errors (YAMLError) without importing yaml here
        raise KeyFileError(f"key file {file} is malformed: {str(exc)[:200]}") from None
    try:
        return KeyFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise KeyFileError(f"key file {file}: {where}: {reason}"[:300]) from None


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class KeyRing:
    """The keys one ingress accepts: the shared key and a key file's, by SHA-256 digest.

    With neither, every request is accepted as :data:`ANONYMOUS_KEY_ID`.

    Args:
        shared_key: the single shared key (``ServingConfig.api_key``), id :data:`SHARED_KEY_ID`.
        path: the key file (``None``: none).
        defaults: limits of keys that set none (and of the shared and anonymous callers).
        reload_interval_s: at most one ``stat`` of the key file per this many seconds.
        clock: monotonic seconds (tests pass their own).

    Raises:
        KeyFileError: the key file cannot be loaded at start.
    """

    def __init__(
        self,
        shared_key: str | None = None,
        path: str | os.PathLike[str] | None = None,
        defaults: KeyLimits | None = None,
        reload_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._defaults = defaults or KeyLimits()
        self._shared = hash_key(shared_key) if shared_key else None
        self._path = Path(path) if path is not None else None
        self._interval = reload_interval_s
        self._clock = clock
        self._by_digest: dict[str, ApiKey] = {}
        self._callers: dict[str, Caller] = {}
        self._default_caller = Caller(
            key_id=SHARED_KEY_ID if shared_key else ANONYMOUS_KEY_ID, limits=self._defaults
        )
        self._identity: tuple[int, int, int] | None = None
        self._checked = clock()
        self.reloads = 0
        """Key files loaded since start (the first one included)."""
        if self._path is not None:
            self._identity = _identity(self._path)
            self._install(load_key_file(self._path))

    @property
    def required(self) -> bool:
        """Whether requests need a key."""
        return self._shared is not None or self._path is not None

    def entries(self) -> list[ApiKey]:
        """The key file's keys now in force (revoked ones included)."""
        return list(self._by_digest.values())

    def _install(self, keys: KeyFile) -> None:
        self._by_digest = {key.sha256: key for key in keys.keys}
        self._callers = {
            key.sha256: Caller(key_id=key.id, limits=key.limits(self._defaults))
            for key in keys.keys
        }
        self.reloads += 1

    def reload_if_changed(self, force: bool = False) -> bool:
        """Re-reads the key file if it changed (at most once per interval unless ``force``).

        A file that fails to load is logged (once per change) and the previous keys stay.

        Returns:
            Whether new keys were installed.
        """
        if self._path is None:
            return False
        now = self._clock()
        if not force and now - self._checked < self._interval:
            return False
        self._checked = now
        identity = _identity(self._path)
        if identity == self._identity:
            return False
        self._identity = identity
        try:
            keys = load_key_file(self._path)
        except KeyFileError as exc:
            logger.error(
                "%s; the previous %d keys stay in force", exc.message, len(self._by_digest)
            )
            return False
        self._install(keys)
        logger.info("key file %s reloaded: %d keys", self._path, len(keys.keys))
        return True

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller an ``Authorization`` header names.

        Raises:
            AuthenticationError: no key, a malformed or overlong header, an unknown or revoked key.
        """
        if not self.required:
            return self._default_caller
        header = authorization or ""
        if len(header) > MAX_AUTHORIZATION_BYTES:
            raise AuthenticationError(
                f"the Authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes"
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("Incorrect or missing API key")
        self.reload_if_changed()
        digest = hash_key(token)
        if self._shared is not None and hmac.compare_digest(digest, self._shared):
            return self._default_caller
        key = self._by_digest.get(digest)
        if key is None:
            raise AuthenticationError("Incorrect or missing API key")
        if key.revoked:
            raise AuthenticationError(f"the API key {key.id!r} has been revoked")
        return self._callers[digest]
