#!/usr/bin/env bash
# One bounded GPU check (about 8 minutes) for a device session on an H200: CUDA kernel tests
# on the real GPU, the puzzle solved with cpu and cuda kernels, cpu vs cuda timings of
# evaluate_candidates / prefix_activations. Report: $OUT/gpu_report.md (+ gpu_report.json),
# rewritten after every section; log: $OUT/gpu_check.log.
#
#   bash bench/gpu_check.sh                      # on the GPU machine, from the repo root
#   NUMBA_ENABLE_CUDASIM=1 bash bench/gpu_check.sh --tiny   # dry run without a GPU
#
# The puzzle is looked for in ../shared/puzzle, shared/puzzle and .gpu_puzzle (or --puzzle).
# ../shared does not travel to the device machine; to include it, before the run:
#   echo /.gpu_puzzle/ >> .git/info/exclude; cp -r ../shared/puzzle .gpu_puzzle
# and name .gpu_puzzle in the run's carry. Extra arguments go to bench/gpu_check.py
# (--budget SECONDS, --skip tests,planted,puzzle,timings, --solve-limit, --call-cap ...).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
OUT="${OUT:-${TMPDIR:-/tmp}/dropnet-gpu-check}"
export OUT
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
{
  echo "== $(date -u +%FT%TZ) $("$PY" --version 2>&1) at $PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || echo "no nvidia-smi"
} 2>&1 | tee "$OUT/gpu_check.log"
# the script keeps to its own --budget (450 s by default); this is the hard stop
timeout -k 10 510 "$PY" bench/gpu_check.py "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "== gpu_check exit $rc; report: $OUT/gpu_report.md" | tee -a "$OUT/gpu_check.log"
exit "$rc"
