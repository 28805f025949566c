#!/usr/bin/env bash
# Reproduce the README's paper tables and figures (issues 11 and 21): Frankle & Carbin 2019's
# LeNet-300-100 protocol on MNIST (20,000 iterations per level) and on Fashion-MNIST
# (10,000 iterations per level), 17 levels, 3 replicates, both controls; then the studies of
# results/missing_the_mark.sh: pruning at initialisation against IMP with Frankle et al.
# 2021's layer-wise shuffle, and structured (neuron) tickets against their reinitialisation.
#
#   bash results/reproduce.sh [RUNS_DIR]      # default RUNS_DIR: runs/paper
#
# Each study is resumable: run the script again after an interruption and it carries on.
# The weights stay in RUNS_DIR; `lth publish` writes the small outputs (config, CSVs, figures,
# report, the masks bit-packed) into results/<study>/, which `lth verify` then audits. Set LTH_DATA_DIR to a folder holding mnist/ and fashion-mnist/ IDX
# files (MNIST ships with lth; Fashion-MNIST is downloaded if it is missing).
#
# Environment (all optional):
#   STUDIES="a b"   only these studies (default: all): lenet_300_100_mnist,
#                   lenet_300_100_fashion_mnist, missing_the_mark_mnist, structured_mnist,
#                   structured_fashion_mnist
#   RESULTS=DIR     publish into DIR/<study>/ instead of results/<study>/
#   ITER=N LEVELS=N REPLICATES=N   override every study's iterations, levels and replicates
#                   (a smoke test of the whole pipeline: ITER=50 LEVELS=3 REPLICATES=1,
#                   with RUNS_DIR and RESULTS under /tmp)
#   LTH_SRC=DIR     run `python -m lth` from this source folder instead of the installed lth
#   THREADS=N       torch threads of the studies of missing_the_mark.sh (default 1: as fast
#                   for LeNet, and much faster when other work shares the CPU)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
runs="${1:-runs/paper}"
results="${RESULTS:-$here}"
data=(); [ -n "${LTH_DATA_DIR:-}" ] && data=(--data-dir "$LTH_DATA_DIR")

lth() {  # the installed lth, or the one in $LTH_SRC
  if [ -n "${LTH_SRC:-}" ]; then
    PYTHONPATH="$LTH_SRC${PYTHONPATH:+:$PYTHONPATH}" python -m lth "$@"
  else
    command lth "$@"
  fi
}
wanted() { [ -z "${STUDIES:-}" ] || [[ " $STUDIES " == *" $1 "* ]]; }

study() {  # name, dataset, iterations, threads, report options
  wanted "$1" || return 0
  local out="$runs/$1"
  lth run --preset lenet_300_100_paper --dataset "$2" --iterations "${ITER:-$3}" \
    --levels "${LEVELS:-17}" --replicates "${REPLICATES:-3}" --threads "$4" --quiet \
    --checkpoint-every 120 "${data[@]}" --out "$out"
  # lth verify, then config, tables, figures, report.md and every mask bit-packed (issue 21);
  # no --force: every folder under results/ was written by lth publish, which replaces its own
  # files and refuses to touch anyone else's
  lth publish "$out" "$results/$1" "${@:5}"
}

# The thread counts are those of the published run (they change only the float rounding).
study lenet_300_100_mnist mnist 20000 2 --paper frankle2019
study lenet_300_100_fashion_mnist fashion_mnist 10000 1

# shellcheck source=results/missing_the_mark.sh
source "$here/missing_the_mark.sh"
missing_the_mark_mnist
structured_mnist
structured_fashion_mnist
