#!/usr/bin/env bash
# The GPU check, ready to run on a machine with CUDA: under 8 minutes, from the repository root
# or anywhere.
#
#   1. the CUDA tests (every test that skips without CUDA: pytest -k "cuda or gpu"),
#   2. benchmarks/study.py --device cuda (the paper study's estimated hours on this GPU, the
#      sparse and bf16 speedups), whose JSON line it prints last.
#
# Without CUDA it says so on one line and falls back to the CPU: the tests are collected and
# skip, and study.py runs a few steps on the CPU (a smoke test of the script, not a figure).
# Usage: benchmarks/gpu.sh [--dry-run]   (--dry-run prints the commands without running them)
# Environment: LTH_TEST_DATA (the folder holding mnist/; default ../shared/data), PYTHON.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
python="${PYTHON:-python}"
data="${LTH_TEST_DATA:-$root/../shared/data}"
export LTH_TEST_DATA="$data"
dry=0
if [[ "${1:-}" == "--dry-run" ]]; then
    dry=1
elif [[ $# -gt 0 ]]; then
    echo "gpu.sh: unknown argument '$1'; usage: benchmarks/gpu.sh [--dry-run]" >&2
    exit 2
fi

run() {  # print a command, then run it unless --dry-run
    echo "+ $*" >&2
    if [[ $dry -eq 0 ]]; then "$@"; fi
}

if "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    device=cuda
    "$python" -c "import torch; print('gpu.sh: CUDA', torch.version.cuda, 'on', \
torch.cuda.get_device_name(0), '| torch', torch.__version__)"
    study=(--steps 100 --evaluations 2 --rounds 2)
else
    device=cpu
    echo "gpu.sh: no CUDA device here: the CUDA tests skip and study.py runs a short CPU smoke" \
        "test instead (no GPU figure)" >&2
    study=(--steps 2 --evaluations 1 --rounds 1 --threads 1)
fi

# 1. the tests that need CUDA (4 minutes at most); -o addopts= drops the xdist workers
run timeout 240 "$python" -m pytest -o addopts= -q -rs -p no:cacheprovider -k "cuda or gpu" tests

# 2. the study benchmark (3.5 minutes at most), its JSON line last
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
run timeout 210 "$python" benchmarks/study.py --device "$device" --data-dir "$data" \
    --process-iterations 0 "${study[@]}" | tee "$out"
if [[ $dry -eq 0 ]]; then
    echo "gpu.sh: study.py on $device:" >&2
    tail -n 1 "$out"
fi
