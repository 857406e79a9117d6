"""Secrets out of pickles: :func:`seal` pickles an object with its secret values replaced by references.

What counts as a secret value (a non-empty ``str`` or ``bytes``):

* pydantic ``SecretStr`` / ``SecretBytes`` values, anywhere;
* the value of a dict key, object attribute or pydantic field whose *name* says secret
  (:func:`is_secret_name`: ``api_key``, ``password``, ``token``, ``secret``, ``credentials``,
  ``aws_secret_access_key``, ``client_secret``, ``*_access_key``, ...), anywhere;
* inside a *credentials context*, every value under ``key`` or ``*_key`` too, at any depth: the
  dict under a name like ``storage_options`` (fsspec: s3fs's ``key``/``secret``/``token``,
  ``client_kwargs={"aws_access_key_id": ...}``), ``fs_options`` or ``credentials``, and any dict
  that holds a secret-named value itself (so ``{"key": ..., "secret": ...}`` passed positionally).

The pickler sees every object it writes, and attributes and pydantic fields reach it as the
state dict of their object, so one rule on dicts covers plain dicts, objects (``__dict__``) and
pydantic models (field names) alike, however deeply a launcher nests them.

A sealed pickle holds persistent ids in place of the secrets; :func:`unseal` needs the values
back (by reference id) and raises :class:`~placement.errors.SecretsUnavailableError` for any
that is missing, so nothing ever runs with a placeholder for a credential. Pure Python (the
pickler is cloudpickle's, as vendored by Ray; no running Ray is needed).
"""

from __future__ import annotations

import copy
import io
import pickle
import re
import secrets as _random
from collections.abc import Mapping
from typing import Any

from pydantic import SecretBytes, SecretStr

from placement.errors import SecretsUnavailableError

SecretValue = str | bytes

_STRONG = re.compile(
    r"(?:^|_)(?:secrets?|token|password|passwd|passphrase|credentials?|apikey|authorization)(?:_|$)"
    r"|(?:^|_)(?:api|access|secret|private|account|auth|signing|encryption|master|client)_key(?:_|$)"
)
"""Names whose value is a secret wherever they appear."""

_KEYISH = re.compile(r"^key(?:_id)?$")
"""Names whose value is a secret inside a credentials context too: ``key`` (s3fs), ``key_id``."""

_CONTEXT = re.compile(r"(?:^|_)(?:storage_options|fs_options|fs_kwargs|s3_options|credentials?)$")
"""Names of dicts whose every key-like value (at any depth) is a secret."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_SECRET_PID = "placement.secret"
_REDACTED_PID = "placement.redacted"


def _normal(name: str) -> str:
    return _CAMEL.sub("_", name).replace("-", "_").lower().strip("_")


def is_secret_name(name: str, credentials_context: bool = False) -> bool:
    """Whether a value named ``name`` is a secret.

    Args:
        name: A dict key, attribute or field name (``camelCase`` and ``kebab-case`` are understood).
        credentials_context: The name is inside a credentials dict (e.g. ``storage_options``),
            where ``key`` and ``*_key`` are secrets too.
    """
    normal = _normal(name)
    return bool(_STRONG.search(normal) or (credentials_context and _KEYISH.search(normal)))


def is_credentials_context(name: str) -> bool:
    """Whether the dict named ``name`` holds credentials (``storage_options``, ``credentials``, ...)."""
    return bool(_CONTEXT.search(_normal(name)))


def _is_secret_value(value: Any) -> bool:
    return type(value) in (str, bytes) and len(value) > 0


class SecretRef:
    """Stands for one secret value inside a sealed pickle (never holds the value).

    Args:
        ref: The reference id (random; says nothing about the value).
    """

    __slots__ = ("ref",)

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"


class _SealingPickler:
    """Builds the cloudpickle pickler subclass once (cloudpickle is imported lazily)."""

    cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is None:
            from ray import cloudpickle

            class Pickler(cloudpickle.Pickler):  # type: ignore[misc,name-defined]
                def __init__(self, file: io.BytesIO) -> None:
                    super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
                    self.secrets: dict[str, SecretValue] = {}
                    self._by_value: dict[SecretValue, str] = {}
                    self._keep: list[Any] = []  # redacted copies stay alive while memoised
                    self._skip: set[int] = set()

                def ref(self, value: SecretValue) -> SecretRef:
                    ref = self._by_value.get(value)
                    if ref is None:
                        ref = _random.token_hex(12)
                        self._by_value[value] = ref
                        self.secrets[ref] = value
                    return SecretRef(ref)

                def persistent_id(self, obj: Any) -> Any:
                    kind = type(obj)
                    if kind in _PLAIN:
                        return None
                    if kind is SecretRef:
                        return (_SECRET_PID, obj.ref, None)
                    if isinstance(obj, SecretStr | SecretBytes):
                        value = obj.get_secret_value()
                        return (_SECRET_PID, self.ref(value).ref, kind)
                    if isinstance(obj, dict):
                        if id(obj) in self._skip:
                            return None
                        # A class pickled by value: its (string) annotations name fields, they
                        # hold no values.
                        annotations = obj.get("__annotations__")
                        if isinstance(annotations, dict):
                            self._skip.add(id(annotations))
                            self._keep.append(annotations)
                        redacted = _redact(obj, False, self.ref)
                        if redacted is not None:
                            self._keep.append(redacted)
                            return (_REDACTED_PID, redacted)
                    return None

            cls.cls = Pickler
        return cls.cls


_PLAIN = frozenset({str, bytes, int, float, bool, type(None), tuple, list, set, frozenset})


def _redact(mapping: dict[Any, Any], context: bool, ref: Any) -> dict[Any, Any] | None:
    """A copy of ``mapping`` with secret values replaced by :class:`SecretRef` (None: none there)."""
    if not context:
        context = any(
            isinstance(k, str) and is_secret_name(k) and _is_secret_value(v)
            for k, v in mapping.items()
        )
    changes: dict[Any, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            continue
        if _is_secret_value(value) and is_secret_name(key, context):
            changes[key] = ref(value)
        elif isinstance(value, dict) and (
            context or is_credentials_context(key) or is_secret_name(key)
        ):
            inner = _redact(value, True, ref)
            if inner is not None:
                changes[key] = inner
    if not changes:
        return None
    redacted = copy.copy(mapping)
    redacted.update(changes)
    return redacted


def seal(obj: Any) -> tuple[bytes, dict[str, SecretValue]]:
    """Pickles ``obj`` (cloudpickle) with every secret value replaced by a reference.

    Returns:
        The sealed pickle (no secret value in it) and the secret values by reference id (empty:
        there were none, and :func:`unseal` needs nothing).
    """
    buffer = io.BytesIO()
    pickler = _SealingPickler.get()(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), dict(pickler.secrets)


class _Unsealer(pickle.Unpickler):
    def __init__(self, blob: bytes, values: Mapping[str, SecretValue]) -> None:
        super().__init__(io.BytesIO(blob))
        self.values = values
        self.missing: list[str] = []

    def persistent_load(self, pid: Any) -> Any:
        tag = pid[0] if isinstance(pid, tuple) and pid else None
        if tag == _REDACTED_PID:
            return pid[1]
        if tag == _SECRET_PID:
            _, ref, wrapper = pid
            if ref not in self.values:
                self.missing.append(ref)
                return None
            value = self.values[ref]
            return value if wrapper is None else wrapper(value)
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def unseal(blob: bytes, values: Mapping[str, SecretValue]) -> Any:
    """Unpickles a :func:`seal` pickle with the secret values put back.

    Raises:
        SecretsUnavailableError: some referenced value is not in ``values``.
    """
    unsealer = _Unsealer(blob, values)
    obj = unsealer.load()
    if unsealer.missing:
        raise SecretsUnavailableError(
            f"{len(unsealer.missing)} secret value(s) of the sealed object are not available"
        )
    return obj


__all__ = [
    "SecretRef",
    "SecretValue",
    "is_credentials_context",
    "is_secret_name",
    "seal",
    "unseal",
]
