"""serving: many models on Ray Serve (see docs/architecture.md).

* :class:`ModelSpec` / :class:`ModelRegistry`: what models exist and where their weights live.
* :func:`publish_model`: upload a local model folder with its checksum manifest.
* :func:`publish_version`: publish a new version of a versioned model; replicas move to it
  (:mod:`serving.versions`).
* :class:`ModelCache` / :func:`node_cache`: the per-node model cache (object storage -> local disk).
* :mod:`serving.engines`: the ``Engine`` protocol, transformers and vLLM engines.
* :func:`build_app` / :func:`serve_models`: the Serve app (OpenAI-compatible HTTP API).
* :class:`Client`: the Python client agents use.
* :class:`KeyRing` / :class:`ApiKey` / :func:`hash_key`: API keys per user or project (hashed, in a
  key file reloaded on change); per-key limits and fair queueing in ``ServingConfig.users``;
  ``python -m serving usage | new-key | revoke``.
"""

from __future__ import annotations

from serving.auth import ApiKey, KeyFile, KeyLimits, KeyRing, hash_key, load_key_file
from serving.cache import CacheConfig, CacheStats, LocalModel, ModelCache, node_cache
from serving.client import Client, Completion
from serving.errors import (
    AuthenticationError,
    CacheBudgetError,
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    KeyFileError,
    ModelNotFoundError,
    QueueFullError,
    RateLimitError,
    ServingError,
    WeightsError,
)
from serving.spec import EngineKind, ModelRegistry, ModelSpec
from serving.storage import Manifest, fetch_model, publish_model
from serving.versions import (
    ModelVersion,
    VersionExistsError,
    current_version,
    publish_version,
    resolve_version,
    set_current_version,
)

__all__ = [
    "ApiKey",
    "AuthenticationError",
    "CacheBudgetError",
    "CacheConfig",
    "CacheStats",
    "Client",
    "Completion",
    "ContextLengthError",
    "EngineError",
    "EngineKind",
    "InvalidRequestError",
    "KeyFile",
    "KeyFileError",
    "KeyLimits",
    "KeyRing",
    "LocalModel",
    "Manifest",
    "ModelCache",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelSpec",
    "ModelVersion",
    "QueueFullError",
    "RateLimitError",
    "ServingError",
    "VersionExistsError",
    "WeightsError",
    "current_version",
    "fetch_model",
    "hash_key",
    "load_key_file",
    "node_cache",
    "publish_model",
    "publish_version",
    "resolve_version",
    "set_current_version",
]


def build_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`serving.builder.build_app` (imported lazily: it pulls in Ray Serve)."""
    from serving.builder import build_app as _build

    return _build(*args, **kwargs)
