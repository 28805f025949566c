"""What a whole lottery-ticket study costs, with sparse kernels and with ``--kernels dense``.

Times the work of a level of LeNet-300-100 on real MNIST (the ticket and both controls, Adam,
batch 60, the paper's evaluation protocol: 5,000 validation and 10,000 test images every 100
iterations; training steps and evaluations timed apart, combined as 100 steps to one
evaluation) at 100%, 51.3%, 21.1%, 10.7%, 3.6% and 1.2% of the weights remaining, with the
default kernels (``auto``: sparse below this machine's calibrated density) and with
``--kernels dense``, the two taking turns so that a shared machine's noise hits both alike.
From the per-iteration cost at each density (interpolated in log-density between the measured
ones) it extrapolates the wall time of the ``lenet_300_100_paper`` preset: 21 levels x 50,000
iterations x 3 branches x 5 replicates (level 0: the random-pruning control is the ticket).

Then, as whole processes (imports, data, training, evaluation, files, figures), ``lth run
--levels 0 --iterations N --eval-every N/10`` against a plain in-memory PyTorch loop training
the same two networks (nn.Sequential, torch.optim.Adam, masks re-applied after each step,
the same evaluations), also in turns. Prints a table, then one JSON line. Run:
``python benchmarks/study.py [--data-dir ../shared/data] [--threads 1] [--process-iterations N]``.

``bf16_speedup``: the dense level (100% of the weights, ``--kernels dense``) timed in
``--precision bf16`` in the same rounds, the median of the per-round ratios fp32 / bf16 of the
whole per-iteration cost (step and its share of the float32 evaluation);
``bf16_step_speedup`` the same for the training step alone. ``--device cuda`` times everything
on the GPU (15 networks together: a level's 3 branches x 5 replicates) and skips the whole
processes unless ``--process-iterations`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lth.core.kernels import cpu_model, native_bf16, threshold
from lth.core.training import TrainConfig, Trainer
from lth.data import load_dataset
from throughput import make_jobs  # the benchmarks' folder is on sys.path when run

#: weights remaining (percent) at the levels measured, and the level each is
MEASURED = {100.0: 0, 51.3: 3, 21.1: 7, 10.7: 10, 3.6: 15, 1.2: 20}
PAPER = {"levels": 21, "iterations": 50_000, "branches": 3, "replicates": 5}


def time_parts(
    data,
    level: int,
    k: int,
    steps: int,
    evaluations: int,
    kernels: str,
    clock=time.perf_counter,
    precision: str = "fp32",
    device: str = "cpu",
) -> tuple[float, float]:
    """Seconds per training step and per evaluation (5,000 validation and 10,000 test
    images) of K networks training together, each timed on its own."""
    template, jobs = make_jobs(k, level, 0.2, 0.1, controls=True)
    config = TrainConfig(iterations=10**9, kernels=kernels, precision=precision)
    trainer = Trainer(template, jobs, data, config, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    trainer.step()  # warm-up
    sync()
    start = clock()
    for _ in range(steps):
        trainer.step()
    sync()
    step = (clock() - start) / steps
    start = clock()
    for _ in range(evaluations):
        trainer.evaluate(data.val_x, data.val_y)
        trainer.evaluate(data.test_x, data.test_y)
    sync()
    evaluation = (clock() - start) / evaluations if evaluations else 0.0
    return step, evaluation


def time_level(
    data, level: int, k: int, steps: int, evaluations: int, kernels: str, clock=time.perf_counter
) -> float:
    """Seconds per iteration per network, K networks training together, under the paper's
    protocol: one step, plus a hundredth of an evaluation."""
    step, evaluation = time_parts(data, level, k, steps, evaluations, kernels, clock)
    return (step + evaluation / 100) / k


def paper_hours(per_iteration: dict[float, float]) -> float:
    """The paper study's hours from seconds per iteration per network at measured densities."""
    points = sorted((math.log(p), t) for p, t in per_iteration.items())
    total = 0.0
    for level in range(PAPER["levels"]):
        remaining = 100 * weights_remaining(level)
        x = math.log(remaining)
        lo = max((pt for pt in points if pt[0] <= x), default=points[0])
        hi = min((pt for pt in points if pt[0] >= x), default=points[-1])
        t = lo[1] if hi[0] == lo[0] else lo[1] + (hi[1] - lo[1]) * (x - lo[0]) / (hi[0] - lo[0])
        networks = PAPER["replicates"] * (2 if level == 0 else PAPER["branches"])
        total += networks * PAPER["iterations"] * t
    return total / 3600


def weights_remaining(level: int) -> float:
    dims = (784, 300, 100, 10)
    sizes = [i * o for i, o in zip(dims[:-1], dims[1:])]
    kept = [s * 0.8**level for s in sizes[:-1]] + [sizes[-1] * 0.9**level]
    return sum(kept) / sum(sizes)


PLAIN_LOOP = r"""
import sys, time
import torch, torch.nn as nn, torch.nn.functional as F
from lth.data import load_dataset
iterations, data_dir = int(sys.argv[1]), sys.argv[2] or None
torch.set_num_threads(int(sys.argv[3]))
data = load_dataset("mnist", data_dir)
every = max(1, iterations // 10)
for net in range(2):  # the ticket and the reinit control of level 0
    g = torch.Generator().manual_seed(net)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                          nn.ReLU(), nn.Linear(100, 10))
    masks = {n: torch.ones_like(p) for n, p in model.named_parameters() if n.endswith("weight")}
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    n = data.train_x.shape[0]
    for it in range(iterations):
        if it % (n // 60) == 0:
            order = torch.randperm(n, generator=g)
        idx = order[(it % (n // 60)) * 60:(it % (n // 60) + 1) * 60]
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m)
        if (it + 1) % every == 0:
            with torch.no_grad():
                for x, y in ((data.val_x, data.val_y), (data.test_x, data.test_y)):
                    out = model(x)
                    F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()
"""


def whole_processes(
    iterations: int, data_dir: str | None, rounds: int, threads: int, device: str = "cpu"
) -> dict[str, float]:
    """Median wall seconds of ``lth run`` and of the plain loop as whole processes, in turns."""
    env = dict(os.environ)
    times: dict[str, list[float]] = {"lth": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            out = Path(tmp) / f"run{r}"
            every = str(max(1, iterations // 10))
            lth = [sys.executable, "-m", "lth", "run", "--levels", "0", "--quiet", "--out"]
            lth += [str(out), "--iterations", str(iterations), "--eval-every", every]
            lth += ["--threads", str(threads), "--device", device]
            lth += ["--data-dir", data_dir] if data_dir else []
            plain = [
                sys.executable,
                "-c",
                PLAIN_LOOP,
                str(iterations),
                data_dir or "",
                str(threads),
            ]
            for name, cmd in (("lth", lth), ("plain", plain)):
                start = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()} | {
        "ratio": statistics.median(p / lt for p, lt in zip(times["plain"], times["lth"]))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=200, help="training steps timed per level")
    parser.add_argument("--evaluations", type=int, default=2, help="evaluations timed per level")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time levels by wall clock, or by this process's CPU time (with --threads 1 on a "
        "machine shared with other jobs: the time it would take alone)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns of auto and dense")
    parser.add_argument(
        "--process-iterations", type=int, default=None, help="0: skip (default 10,000 on CPU)"
    )
    parser.add_argument("--process-rounds", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    cuda = device.startswith("cuda")
    if args.process_iterations is None:
        args.process_iterations = 0 if cuda else 10_000
    data = load_dataset("mnist", args.data_dir, device=device)
    # lth's group size for LeNet-300-100: the thread count on CPU; a level's 15 on a GPU
    k = 15 if cuda else max(2, torch.get_num_threads())
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cut = threshold(device)  # calibrated (or read from the cache) before any timing
    times: dict[str, dict[float, list[float]]] = {"auto": {}, "dense": {}}
    parts: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for remaining, level in MEASURED.items():
            for mode in ("auto", "dense"):
                step, ev = time_parts(
                    data, level, k, args.steps, args.evaluations, mode, clock, device=device
                )
                times[mode].setdefault(remaining, []).append((step + ev / 100) / k)
                if remaining == 100.0 and mode == "dense":
                    parts["fp32"].append((step, ev))
                    parts["bf16"].append(
                        time_parts(
                            data, 0, k, args.steps, 0, mode, clock, precision="bf16", device=device
                        )[:1]
                        + (ev,)  # evaluation is float32 in both: timed once
                    )
    per_it = {m: {p: statistics.median(ts) for p, ts in d.items()} for m, d in times.items()}
    print(f"{'weights remaining':>18s} {'auto ms/it':>12s} {'dense ms/it':>12s} {'speedup':>8s}")
    speedups = {}
    for p in MEASURED:
        ratios = [d / a for a, d in zip(times["auto"][p], times["dense"][p])]
        speedups[p] = statistics.median(ratios)
        print(
            f"{p:17.1f}% {per_it['auto'][p] * 1e3:12.3f} {per_it['dense'][p] * 1e3:12.3f}"
            f" {speedups[p]:8.2f}"
        )
    hours = {mode: paper_hours(per_it[mode]) for mode in per_it}
    print(f"lenet_300_100_paper: {hours['auto']:.1f} h (auto), {hours['dense']:.1f} h (dense)")
    level_ratios = [
        ((s32 + e / 100) / (s16 + e / 100), s32 / s16)
        for (s32, e), (s16, _) in zip(parts["fp32"], parts["bf16"])
    ]
    bf16_speedup = statistics.median(r[0] for r in level_ratios)
    bf16_step_speedup = statistics.median(r[1] for r in level_ratios)
    print(
        f"dense level, bf16 vs fp32 (same rounds): {bf16_speedup:.2f}x per iteration, "
        f"{bf16_step_speedup:.2f}x per training step (native bf16: {native_bf16(device)})"
    )
    processes = {}
    if args.process_iterations > 0:
        processes = whole_processes(
            args.process_iterations,
            args.data_dir,
            args.process_rounds,
            torch.get_num_threads(),
            device,
        )
        print(
            f"whole processes, {args.process_iterations} iterations: lth run "
            f"{processes['lth']:.1f} s, plain PyTorch loop {processes['plain']:.1f} s"
        )
    result = {
        "paper_study_hours": {"auto": round(hours["auto"], 2), "dense": round(hours["dense"], 2)},
        "study_speedup": round(hours["dense"] / hours["auto"], 2),
        "level_speedup_at_3.6": round(speedups[3.6], 2),
        "level_speedups": {str(p): round(s, 2) for p, s in speedups.items()},
        "sparse_threshold": cut,
        "bf16_speedup": round(bf16_speedup, 2),
        "bf16_step_speedup": round(bf16_step_speedup, 2),
        "native_bf16": native_bf16(device),
        "process_speedup_vs_plain_loop": round(processes["ratio"], 2) if processes else None,
        "process_seconds": {n: round(processes[n], 1) for n in ("lth", "plain")}
        if processes
        else None,
        "device": device,
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "tickets_together": k,
        "clock": args.clock,
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
