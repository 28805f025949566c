"""The benchmark script runs end to end and reports every figure the README quotes.

Timings are never asserted (these machines are shared and noisy); only that the script works
and its JSON line carries the documented keys with sane values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def test_throughput_script_prints_table_and_json():
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "2", "--repeats", "1",
           "--ks", "2,3"]  # fmt: skip
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1")  # no oversubscription
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("single_vs_same_gemms", "batched_vs_peak", "speedup_vs_dataloader"):
        assert result[key] > 0, key
    assert result["best_k"] in (2, 3)
    assert set(result["batched_samples_per_s"]) == {"2", "3"}
    assert (result["device"], result["torch"]) == ("cpu", __import__("torch").__version__)
    assert result["threads"] >= 1
    table = "\n".join(lines[:-1])
    for row in ("lth, one ticket, batch 60", "lth, 3 tickets at once", "common way: DataLoader"):
        assert row in table


def test_study_script_prints_table_and_json(tmp_path):
    script = SCRIPT.parent / "study.py"
    cmd = [sys.executable, str(script), "--steps", "1", "--evaluations", "1", "--rounds", "1",
           "--process-iterations", "10", "--threads", "1"]  # fmt: skip
    env = dict(__import__("os").environ, LTH_KERNELS_CACHE=str(tmp_path))
    env.pop("LTH_KERNELS_THRESHOLD", None)  # the benchmark calibrates
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result["paper_study_hours"]) == {"auto", "dense"}
    assert all(v > 0 for v in result["paper_study_hours"].values())
    for key in ("study_speedup", "level_speedup_at_3.6", "process_speedup_vs_plain_loop",
                "bf16_speedup", "bf16_step_speedup"):  # fmt: skip
        assert result[key] > 0, key
    assert set(result["level_speedups"]) == {"100.0", "51.3", "21.1", "10.7", "3.6", "1.2"}
    assert result["cpu"] and result["isa"] and (tmp_path / "kernels.json").is_file()
    assert "lenet_300_100_paper" in "\n".join(lines[:-1])


def test_fixed_cost_script_prints_table_and_json(tmp_path):
    script = SCRIPT.parent / "fixed_cost.py"
    cmd = [sys.executable, str(script), "--rounds", "1", "--iterations", "2", "--warmups", "0"]
    env = dict(__import__("os").environ, LTH_KERNELS_CACHE=str(tmp_path))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["lth_run_s"] > 0 and result["import_torch_s"] > 0
    assert len(result["beyond_torch_rounds_s"]) == 1 and "beyond_torch_cpu_s" in result
    profiled = result["profiled"]
    assert profiled["imports_s"]["lth"] > 0 and profiled["imports_s"]["torch"] > 0
    phases = profiled["phases_s"]
    assert phases["lth_main"] >= phases["training"] > 0 and phases["figures"] > 0
    assert phases["lth_main"] >= phases["finish_run"] >= phases["figures"]
    assert "beyond import torch" in "\n".join(lines[:-1])
