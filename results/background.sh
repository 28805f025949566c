#!/usr/bin/env bash
# Run the studies not yet finished (issue 21: missing_the_mark_mnist, structured_mnist) in the
# background at the lowest CPU priority, so they go on across sessions:
#
#   bash results/background.sh [RUNS_DIR]     # default RUNS_DIR: runs/paper
#
# Safe to start again at any time: each run folder resumes where it stopped, and a lock
# (runs/logs/background.lock) makes a second copy exit at once while one runs (lth also
# refuses two writers on one run folder). Logs: runs/logs/background-<UTC time>.log.
# Stop it: kill -- -$(cat runs/logs/background.pid)   (the whole process group).
# STUDIES, ITER, LEVELS, REPLICATES, RESULTS, THREADS: as in results/reproduce.sh; MARK_METHODS: as
# in results/missing_the_mark.sh; LOGS: the log and lock folder (one per copy running at once).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
runs="${1:-runs/paper}"
logs="${LOGS:-runs/logs}"
mkdir -p "$logs"
export STUDIES="${STUDIES:-missing_the_mark_mnist structured_mnist}"
export LTH_SRC="${LTH_SRC:-$root/src}"  # this checkout's lth, whatever is installed
log="$logs/background-$(date -u +%Y%m%dT%H%M%SZ).log"
lock="$logs/background.lock"

exec 9>>"$lock"
if ! flock -n 9; then
  echo "background.sh: already running (lock $lock held by pid $(cat "$logs/background.pid" 2>/dev/null || echo '?')); not started"
  exit 0
fi
# setsid: its own process group (stoppable as one); the lock (fd 9) goes with it, so the
# lock is held until the studies end, and released when they do or are killed.
# setsid starts a new session, which Linux schedules as its own autogroup: nice alone would
# then still get a fair half of the CPU against an interactive session, so the autogroup's
# nice is set to 19 too (where the kernel has autogroups).
setsid nohup nice -n 19 bash -c 'echo $$ > "$1/background.pid"; shift
  echo 19 > /proc/self/autogroup 2>/dev/null || true
  echo "started $(date -u) on $(hostname): STUDIES=$STUDIES MARK_METHODS=${MARK_METHODS:-all}"
  bash "$@"; rc=$?
  echo "ended $(date -u) with exit status $rc"; exit $rc' \
  _ "$logs" "$here/reproduce.sh" "$runs" >"$log" 2>&1 < /dev/null &
echo "background.sh: started (log $log)"
