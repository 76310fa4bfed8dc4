"""End to end: two bridge processes on one real PostgreSQL and one shared data folder, over a real ComfyUI with the
tiny test checkpoint. The replica that dispatched a running job is killed with SIGKILL; the other takes the job
over, follows it in ComfyUI (never posting it again) and serves its result."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.imaging import decode_png_data_url
from tests.support.real_comfyui import TINY_CHECKPOINT
from tests.support.replica_process import Replica, http

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def test_a_killed_dispatcher_leaves_its_running_job_to_the_other_replica(comfyui: Any, pg_url: str,
                                                                           tmp_path: Path) -> None:
    replicas = [Replica(pg_url, tmp_path / "shared", comfyui.url, lease=3.0, log=tmp_path / f"replica-{i}.log")
                    for i in range(2)]
    try:
        for r in replicas:
            r.ready()
        dispatcher, other = replicas
        status, accepted = http("POST", dispatcher.url + "/generate/text2img", {
            "prompt": "a red house", "width": 128, "height": 128, "steps": 40, "seed": 11, "model": TINY_CHECKPOINT})
        assert status == 202, accepted
        job_id = accepted["id"]
        deadline = time.monotonic() + 180
        while True:
            status, job = http("GET", f"{other.url}/jobs/{job_id}")  # any replica answers
            if job["status"] == "processing" and job["progress"] > 0:
                break
            assert time.monotonic() < deadline and job["status"] in ("queued", "processing"), job
            time.sleep(0.1)
        os.kill(dispatcher.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        status, done = http("GET", f"{other.url}/jobs/{job_id}?wait=60", timeout=90)
        while done["status"] in ("queued", "processing"):
            assert time.monotonic() - killed < 300, done
            status, done = http("GET", f"{other.url}/jobs/{job_id}?wait=60", timeout=90)
        assert done["status"] == "completed", done
        image = decode_png_data_url(done["result"]["images"][0])
        assert image.size == (128, 128)
        # ComfyUI ran the job once: the prompt the killed replica posted, followed to its end by the other one.
        history = comfyui.get_json("/history?max_items=50")
        ran = [pid for pid, entry in history.items() if (entry["prompt"][3] or {}).get("pixart_job") == job_id]
        assert len(ran) == 1, ran
        print(f"\ntaken over and completed {time.monotonic() - killed:.1f} s after the dispatcher was killed")
    finally:
        for r in replicas:
            r.stop()

