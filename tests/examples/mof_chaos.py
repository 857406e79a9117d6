"""Runs the MOF pipeline and kill -9s the Database and the Validator mid-run; prints what it saw as JSON.

Used by ``test_mof_kill.py`` (run as ``python -m tests.examples.mof_chaos OUT``, a process of its own).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from examples.common.runtime import prepare_environment

prepare_environment()

from examples.common.runtime import checkpoint_uri, make_runtime, retry
from examples.mof.pipeline import MofConfig, launch, run_until_done, snapshot, stop_all

BUDGET = 40


async def main(out: Path) -> dict[str, object]:
    rt = make_runtime(None, None, checkpoint_uri(out, None), 2, "mof-chaos")
    try:
        handles = await launch(
            rt, MofConfig(budget=BUDGET, insertions=500, retrain_every=5, high_water=2, low_water=0)
        )
        started = time.monotonic()
        while True:  # wait until the pipeline is well under way
            progress = await snapshot(handles, started)
            if progress.funnel["generated"] >= 12 and progress.funnel["pending"] > 0:
                break
            if progress.done:
                raise RuntimeError("the pipeline finished before the kill: raise the budget")
            await asyncio.sleep(0.1)
        killed = {}
        for name in ("database", "validator"):
            handle = getattr(handles, name)
            info = await retry(handle.info)
            os.kill(info.pid, signal.SIGKILL)
            killed[name] = {"pid": info.pid, "funnel_before": progress.funnel}
        final = await run_until_done(handles, timeout=240)
        restarted = {}
        for name in ("database", "validator"):
            info = await retry(getattr(handles, name).info)
            restarted[name] = {"pid": info.pid, "restarted": info.restarted}
        accepted = {
            name: (await retry(getattr(handles, name).status)).accepted
            for name in ("assembler", "validator", "estimator")
        }
        export = await handles.database.export()
        generator = await retry(handles.generator.status)
        await stop_all(rt)
        return {
            "budget": BUDGET,
            "killed": killed,
            "restarted": restarted,
            "funnel": final.funnel,
            "accepted": accepted,
            "issued": generator["issued"],
            "records": len(export["records"]),
            "retrains": len(export["retrains"]),
            "assembler_throttled": final.throttles,
        }
    finally:
        rt.close()


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1])))
    print("RESULT " + json.dumps(result))
