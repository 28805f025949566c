"""The fixed cost of a tiny study: a 10-iteration ``lth run`` beyond ``import torch``.

Times, as whole processes taking turns (so that a shared machine's noise hits both alike),
``python -c "import torch"`` (the reference) and ``python -m lth run --levels 0 --iterations 10
--eval-every 5 --quiet`` on MNIST; ``beyond_torch_s`` is the median over rounds of the
difference (the goal: under 3 s), ``beyond_torch_cpu_s`` the same in CPU seconds (user + system:
steadier than wall time on a machine shared with other jobs). Then one more run, in-process
under ``-X importtime`` and ``cProfile``, breaks that time down: the imports beyond torch by
package (lth, matplotlib, ...), and the cumulative time of the study's phases (data, training,
files, derived tables, figures, figure saving). Bytecode is cached (in a temporary folder,
``PYTHONPYCACHEPREFIX``) and a first, untimed run fills the cache, as for an installed package:
with ``PYTHONDONTWRITEBYTECODE`` set, every process would compile lth's modules again. The
profiler slows Python-heavy code (matplotlib) more than torch's kernels, so the breakdown is in
the profiled run's own seconds, next to its total. Prints a table, then one JSON line. Run:
``python benchmarks/fixed_cost.py [--data-dir ../shared/data] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the phases of the breakdown: (label, file suffix, function name) of cProfile's entries
PHASES = (
    ("lth_main", "lth/cli/__init__.py", "main"),
    ("data", "lth/data/dataset.py", "load_dataset"),
    ("training", "lth/core/training.py", "run"),
    ("finish_run", "lth/study/runner.py", "finish_run"),
    ("summary_stats", "lth/analysis/report.py", "write_summary_stats"),
    ("mask_analysis", "lth/analysis/mask_analysis.py", "ensure_analysis"),
    ("figures", "lth/analysis/plots.py", "plot_runs"),
    ("figure_saving", "lth/analysis/figure_style.py", "save_figure"),
)
#: packages whose import time is reported apart
PACKAGES = ("lth", "matplotlib", "numpy", "PIL", "safetensors", "torch")

PROFILED = r"""
import cProfile, sys, time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
from lth.cli import main
profile = cProfile.Profile()
profile.enable()
code = main(sys.argv[2:])
profile.disable()
end = time.perf_counter()
profile.dump_stats(sys.argv[1])
print(f"{after_torch - start} {end - after_torch}", file=sys.stderr)
sys.exit(code)
"""


def lth_run_args(out: Path, iterations: int, data_dir: str | None) -> list[str]:
    """``lth run`` arguments of the timed study."""
    every = str(max(1, iterations // 2))
    args = ["run", "--levels", "0", "--iterations", str(iterations), "--eval-every", every]
    args += ["--quiet", "--out", str(out), "--threads", "1"]
    return args + (["--data-dir", data_dir] if data_dir else [])


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds one process takes, start to exit (it must succeed), and its CPU seconds
    (user + system, all its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def import_times(stderr: str) -> dict[str, float]:
    """Seconds importing each package of :data:`PACKAGES` (outermost imports of it only),
    from ``python -X importtime``'s lines (printed children first)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((depth, name.strip(), int(cumulative) / 1e6))
    totals = dict.fromkeys(PACKAGES, 0.0)
    stack: list[tuple[int, str]] = []  # the enclosing imports of the current line
    for depth, name, seconds in reversed(rows):  # parents now come before their children
        while stack and stack[-1][0] >= depth:
            stack.pop()
        package = name.split(".")[0]
        inside = any(p.split(".")[0] == package for _, p in stack)
        if package in totals and not inside:
            totals[package] += seconds
        stack.append((depth, name))
    return {k: round(v, 3) for k, v in totals.items()}


def phase_times(stats_file: Path) -> dict[str, float]:
    """Cumulative seconds of each phase of :data:`PHASES` in a cProfile dump."""
    stats = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    out = dict.fromkeys((label for label, _, _ in PHASES), 0.0)
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        for label, suffix, name in PHASES:
            if function == name and filename.replace(os.sep, "/").endswith(suffix):
                out[label] += cumulative
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=3, help="turns of reference and run")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmups", type=int, default=1, help="untimed runs first (0: none)")
    args = parser.parse_args()
    env = dict(os.environ, MPLBACKEND=os.environ.get("MPLBACKEND", "Agg"))
    times: dict[str, list[float]] = {"import_torch": [], "lth_run": []}
    cpu: dict[str, list[float]] = {"import_torch": [], "lth_run": []}
    with tempfile.TemporaryDirectory() as tmp:
        # compiled bytecode cached (in the temporary folder), as an installed package has it
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        warm = [sys.executable, "-m", "lth", *lth_run_args(Path(tmp) / "warm", 2, args.data_dir)]
        for _ in range(args.warmups):
            wall(warm, env)  # untimed: fills the bytecode cache
        for r in range(args.rounds):
            out = Path(tmp) / f"run{r}"
            lth = [sys.executable, "-m", "lth", *lth_run_args(out, args.iterations, args.data_dir)]
            for name, cmd in (
                ("import_torch", [sys.executable, "-c", "import torch"]),
                ("lth_run", lth),
            ):
                seconds, cpu_seconds = wall(cmd, env)
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
        stats_file = Path(tmp) / "profile.pstats"
        argv = lth_run_args(Path(tmp) / "profiled", args.iterations, args.data_dir)
        cmd = [sys.executable, "-X", "importtime", "-c", PROFILED, str(stats_file), *argv]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        torch_s, rest_s = (float(v) for v in done.stderr.strip().splitlines()[-1].split())
        imports = import_times(done.stderr)
        phases = phase_times(stats_file)
    beyond = [run - ref for ref, run in zip(times["import_torch"], times["lth_run"])]
    beyond_cpu = [run - ref for ref, run in zip(cpu["import_torch"], cpu["lth_run"])]
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'what':<44s} {'seconds':>8s}")
    print(f"{'reference: python -c import torch':<44s} {medians['import_torch']:8.2f}")
    label = f"lth run, {args.iterations} iterations (whole process)"
    print(f"{label:<44s} {medians['lth_run']:8.2f}")
    print(f"{'beyond import torch (median of rounds)':<44s} {statistics.median(beyond):8.2f}")
    print(f"{'the same in CPU seconds (user + system)':<44s} {statistics.median(beyond_cpu):8.2f}")
    print(f"profiled run, beyond import torch: {rest_s:.2f} s, of which")
    for name, seconds in imports.items():
        if name != "torch":
            print(f"  {'import ' + name:<42s} {seconds:8.2f}")
    for name, seconds in phases.items():
        print(f"  {name:<42s} {seconds:8.2f}")
    result = {
        "beyond_torch_s": round(statistics.median(beyond), 2),
        "beyond_torch_rounds_s": [round(b, 2) for b in beyond],
        "beyond_torch_cpu_s": round(statistics.median(beyond_cpu), 2),
        "import_torch_s": round(medians["import_torch"], 2),
        "lth_run_s": round(medians["lth_run"], 2),
        "iterations": args.iterations,
        "profiled": {
            "beyond_torch_s": round(rest_s, 2),
            "import_torch_s": round(torch_s, 2),
            "imports_s": imports,
            "phases_s": phases,
        },
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
