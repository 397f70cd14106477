#!/usr/bin/env bash
# The GPU variant of benchmarks/run_all: correctness checks on CUDA, then the benchmarks on the GPU.
# The default fits in 10 minutes on one H100/H200. Results: benchmarks/results/*_cuda.json (copied to $OUT when set).
# usage: bash benchmarks/gpu/run_gpu.sh      (from the repository root, on a machine with CUDA and PyTorch)
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=8
OUTDIR="${OUT:-benchmarks/results}"
mkdir -p "$OUTDIR" benchmarks/results
status=0
run() { echo "== $*"; timeout "$1" "${@:2}" || { echo "FAILED ($?): ${*:2}"; status=1; }; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# default (≤ 10 min): the checks, then bench_gpu.py (Noise Flow training/sampling, imagenet_64 level; 360 s budget)
BENCHES="${BENCHES:-checks,gpu}"   # more: glow,wavelet (add ~4 min)
has() { [[ ",$BENCHES," == *",$1,"* ]]; }
has checks && run 200 python3 benchmarks/gpu/gpu_checks.py
has gpu && run 420 python3 benchmarks/gpu/bench_gpu.py --budget-s "${GPU_BUDGET_S:-360}" \
  --official "${NOISEFLOW_OFFICIAL:-../shared/anchors/noiseflow_official}" --out benchmarks/results/gpu_cuda.json
has glow && run 90 python3 benchmarks/bench_glow_block.py --device cuda --batch 64 --reps 20
has wavelet && run 120 python3 benchmarks/bench_wavelet.py --device cuda --reps 10
cp benchmarks/results/*cuda*.json "$OUTDIR"/ 2>/dev/null || true
exit $status
