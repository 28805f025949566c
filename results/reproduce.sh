#!/usr/bin/env bash
# Reproduce the README's paper tables and figures (issue 11): Frankle & Carbin 2019's
# LeNet-300-100 protocol on MNIST (20,000 iterations per level) and on Fashion-MNIST
# (10,000 iterations per level), 17 levels, 3 replicates, both controls.
#
#   bash results/reproduce.sh [RUNS_DIR]      # default RUNS_DIR: runs/paper
#
# Each study is resumable: run the script again after an interruption and it carries on.
# The weights stay in RUNS_DIR; `lth publish` writes the small outputs (config, CSVs, figures,
# report, the masks bit-packed) into results/<study>/, which `lth verify` then audits. Set LTH_DATA_DIR to a folder holding mnist/ and fashion-mnist/ IDX
# files (MNIST ships with lth; Fashion-MNIST is downloaded if it is missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
runs="${1:-runs/paper}"
data=(); [ -n "${LTH_DATA_DIR:-}" ] && data=(--data-dir "$LTH_DATA_DIR")

study() {  # name, dataset, iterations, threads, report options
  local out="$runs/$1"
  lth run --preset lenet_300_100_paper --dataset "$2" --iterations "$3" --levels 17 \
    --replicates 3 --threads "$4" --quiet --checkpoint-every 120 "${data[@]}" --out "$out"
  # lth verify, then config, tables, figures, report.md and every mask bit-packed (issue 21);
  # --force: the folders published before lth publish existed were copied with cp
  lth publish "$out" "$here/$1" --force "${@:5}"
}

# The thread counts are those of the published run (they change only the float rounding).
study lenet_300_100_mnist mnist 20000 2 --paper frankle2019
study lenet_300_100_fashion_mnist fashion_mnist 10000 1
