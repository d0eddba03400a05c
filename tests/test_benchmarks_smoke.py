"""The benchmarks still run and still tell the two modes apart: each one's
`--smoke` mode as a subprocess, its report written to a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def table_rows(report: str) -> dict[str, list[str]]:
    """A markdown report's table rows: label -> the other cells."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            label, *cells = (cell.strip() for cell in line.strip("|").split("|"))
            rows[label] = cells
    return rows


def run_benchmark(script: str, output: Path, *args: str) -> str:
    """Run `benchmarks/<script>` with this checkout importable; its report."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", output],
        cwd=output.parent,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-4000:]}"
    return output.read_text()


@pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("haproxy") is None,
    reason="needs redis-server and haproxy (.ci/install-redis, .ci/install-haproxy)",
)
@pytest.mark.timeout(300)
def test_bench_deploy_smoke_keeps_every_user_only_with_flet_resilient(tmp_path):
    report = run_benchmark("bench_deploy.py", tmp_path / "deploy.md", "--smoke")
    rows = table_rows(report)
    assert rows[""] == ["plain Flet", "flet-resilient"]
    for step in ("rolling restart", "SIGKILL"):
        plain, resilient = rows[f"users kept: {step}"]
        assert resilient.endswith("(100 %)"), f"{step}: {resilient}\n{report}"
        assert not plain.endswith("(100 %)"), f"{step}: {plain}\n{report}"
