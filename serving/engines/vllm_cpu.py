"""Running vLLM on CPU from its own virtual environment (see ``scripts/vllm-cpu-venv.sh``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]


def vllm_venv(path: str | os.PathLike[str] | None = None) -> Path:
    """The vLLM CPU venv: ``path``, else ``$VLLM_VENV``, else ``<repo>/.venv-vllm``."""
    return Path(path or os.environ.get("VLLM_VENV") or _REPO / ".venv-vllm").absolute()


def cpu_env_vars(venv: Path, kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment vLLM CPU needs: a small KV cache and Intel's OpenMP preloaded."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "TOKENIZERS_PARALLELISM": "false"}
    iomp = venv / "lib" / "libiomp5.so"
    if iomp.exists():
        env["LD_PRELOAD"] = str(iomp)
    return env


def runtime_env(
    path: str | os.PathLike[str] | None = None, kv_cache_gib: int = 1
) -> dict[str, Any]:
    """A Ray ``runtime_env`` that starts a replica from the vLLM CPU venv's Python.

    Raises:
        FileNotFoundError: the venv does not exist (run ``scripts/vllm-cpu-venv.sh``).
    """
    venv = vllm_venv(path)
    python = venv / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"no vLLM CPU venv at {venv}: run scripts/vllm-cpu-venv.sh")
    return {"py_executable": str(python), "env_vars": cpu_env_vars(venv, kv_cache_gib)}
