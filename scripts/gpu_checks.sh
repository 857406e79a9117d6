#!/usr/bin/env bash
# The checks that need a GPU, as one run: tensor-parallel replicas on real GPUs, sleep/wake
# (park/wake) of the transformers engine, and the engine's sleep mode. Every test skips itself
# where torch sees no CUDA device, and TP=2 skips with its reason on fewer than 2 GPUs (the
# 1-GPU machine still checks that an engine finds its placement group's GPU, and that placement
# refuses a TP=2 replica at once).
#
# Usage: bash scripts/gpu_checks.sh            (PYTHON=... to use another interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=index,name,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: not found"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
echo "GPUs visible to torch: $GPUS"
if [ "$GPUS" -lt 2 ]; then
    echo "TP=2 on real GPUs: skipped (needs 2 GPUs, this machine has $GPUS); the 1-GPU checks run"
fi
"$PY" -c "import accelerate" 2>/dev/null || echo "accelerate not installed: a TP=2 transformers device map would be refused"
"$PY" -c "import vllm" 2>/dev/null || echo "vllm not installed: the vLLM TP=2 check skips"
exec "$PY" -m pytest -q -s -rs -p no:cacheprovider --durations=0 \
    tests/serving/test_tensor_parallel_gpu.py \
    tests/serving/engines/test_transformers_cuda.py \
    tests/serving/test_gpu_parking.py
