"""benchmarks/gpu/bench_gpu.py runs end to end in its CPU smoke mode (the GPU run happens on a lent machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_cpu_smoke_mode(tmp_path):
    out = tmp_path / "gpu.json"
    script = ROOT / "benchmarks" / "gpu" / "bench_gpu.py"
    # no time budget: rows that would not start in the budget are dropped, and this test wants them all
    cmd = [sys.executable, str(script), "--cpu", "--out", str(out), "--official", str(tmp_path / "none"),
           "--budget-s", "100000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["failed"] == []
    rows = {f"{s}/{k}" for s, r in d.items() if isinstance(r, dict) for k, v in r.items()
            if isinstance(v, dict) and ("values_per_s" in v or "patches_per_s" in v or "images_per_s" in v)}
    assert {"noiseflow_train@8x32x32/eager", "noiseflow_sample@16x32x32/eager",
            "wavelet_imagenet_64_level1/fp32_eager", "wavelet_imagenet_64_level1/bf16_eager"} <= rows, rows
