"""The benchmarks' `--smoke` modes run end to end (tiny; no goal is asserted)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_hostile_smoke(tmp_path):
    output = tmp_path / "hostile.md"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_hostile.py", "--smoke", "--output", output],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = output.read_text()
    for server in ("plain", "resilient"):
        for phase in ("idle", "big-frames", "event-flood", "reregister"):
            assert f"| {server} | {phase} |" in report
    assert "- goal met:" in report
