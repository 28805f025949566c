"""Executors (issue 16): the units of a study trained in this process or as Ray tasks.

The Ray tests run against a real local cluster started here on 127.0.0.1 with 2 CPUs (one
session-scoped fixture, shut down afterwards) and compare every result file with the local
executor's, byte for byte: same config, seed, grouping and thread count.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line, real_data
from lth.cli import main
from lth.config import ExperimentConfig
from lth.data import dataset_from_tensors, load_dataset
from lth.errors import LTHError
from lth.runfolder.runs import RunFolder
from lth.study.executors import LocalExecutor, RayExecutor, Study, _Driver
from lth.study.experiment import Experiment, MemoryStore
from lth.study.sweep import read_sweep
from lth.usercode import CodeTrust

TESTS = Path(__file__).resolve().parent
NICENESS = "RAY_worker_niceness"  # Ray's default raises its workers' niceness by 15
FLAG = "LTH_TEST_FACTORY_FAILS"  # ray_factories.py: the factory fails on workers if this exists
HOLD = "LTH_TEST_HOLD"  # ray_factories.lenet_held: where a unit of level 1 waits to be killed
CONFIG = ExperimentConfig(
    model="lenet_300_100", levels=2, iterations=40, eval_every=20, batch_size=60,
    replicates=2, controls=("reinit", "random_prune"), val_size=500, max_parallel=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def data():
    """A slice of real MNIST: 6,000 training images, 1,000 test images."""
    full = load_dataset("mnist", real_data(), val_size=0, seed=0)
    return dataset_from_tensors(
        "mnist", full.train_x[:6000], full.train_y[:6000], full.test_x[:1000],
        full.test_y[:1000], val_size=500, seed=0,
    )  # fmt: skip


def files(root: Path) -> dict[str, bytes]:
    """Every result file of a run (tables and safetensors) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.suffix == ".safetensors" or p.name in RESULT_TABLES)
    }


RESULT_TABLES = ("summary.csv", "metrics.csv", "layers.csv")


def train(path: Path, config, data, executor, hook=None) -> dict[str, bytes]:
    """A study trained into a run folder by ``executor`` (no figures); its result files."""
    with RunFolder(path, config) as folder:
        executor.run([Study(Experiment(config, data, trust=CodeTrust.of(config)), folder, hook)])
    return files(path)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory, one_thread):
    """The study trained by the local executor."""
    return train(tmp_path_factory.mktemp("local") / "run", CONFIG, data, LocalExecutor())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster with 2 CPUs, its dashboard (the state API: which tasks ran)
    on 127.0.0.1 (Ray itself binds this machine's address, never the loopback); tests/ on
    the workers' path for ray_factories.py; stopped afterwards."""
    import ray

    flag = tmp_path_factory.mktemp("flag") / "fail"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", FLAG, NICENESS, HOLD)}
    os.environ[NICENESS] = "0"  # as lth's own local cluster: workers at the tests' priority
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), saved["PYTHONPATH"]]))
    os.environ[FLAG] = str(flag)
    os.environ[HOLD] = str(tmp_path_factory.mktemp("hold"))
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield ray, flag
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lth_tasks(ray, state: str | None = None):
    """The lth unit tasks the cluster knows of (Ray's state API)."""
    from ray.util.state import list_tasks

    filters = [("state", "=", state)] if state else []
    return [t for t in list_tasks(filters=filters, limit=1000) if t.name.startswith("lth ")]


def lth_tasks_when(ray, enough, timeout: float = 120.0):
    """:func:`lth_tasks`, asked again until ``enough(tasks)`` holds (at most ``timeout``
    seconds, then the last answer): Ray's state API learns of tasks from events its workers
    flush every second or so, so a list asked for at once may lack the last tasks on a busy
    machine. Only how long the test waits depends on the machine, never what it asserts."""
    end = time.monotonic() + timeout
    while True:
        tasks = lth_tasks(ray)
        if enough(tasks) or time.monotonic() > end:
            return tasks
        time.sleep(0.2)


# ----------------------------------------------------------------------- the units, locally


class Recorder:
    """Stands in for Ray: records submitted units and trains them when told, in any order."""

    def __init__(self):
        self.submitted = []

    def __call__(self, driver, unit, state):
        self.submitted.append((driver, unit, state))

    def finish(self, name_part: str) -> None:
        i = next(i for i, (_, u, _) in enumerate(self.submitted) if name_part in u.name)
        driver, unit, state = self.submitted.pop(i)
        trainer = driver.experiment.trainer(unit, state)
        trained = trainer.run()
        driver.finished(unit, trained, trainer.state_dict())
        driver.advance()

    def names(self) -> list[str]:
        return [u.name for _, u, _ in self.submitted]


def test_units_follow_their_dependencies_and_give_the_local_study(data, one_thread, tmp_path):
    """Level L+1 starts as soon as level L's tickets are trained (its control-only units may
    still run), levels are saved in order, a finished unit of an unfinished level is kept
    and skipped on resume, and the results are bit-identical to Experiment.run."""
    config = dataclasses.replace(CONFIG, iterations=20, eval_every=10)
    expected = Experiment(config, data).run()
    rec = Recorder()
    driver = _Driver(Study(Experiment(config, data), MemoryStore()), rec)
    driver.advance()
    # level 0: the dense network of each replicate, the controls start at level 1
    assert rec.names() == ["level 0 group 0 (ticket/0, ticket/1)"]
    rec.finish("level 0 group 0")
    assert rec.names() == [
        "level 1 group 0 (ticket/0, reinit/0)",
        "level 1 group 1 (random_prune/0, ticket/1)",
        "level 1 group 2 (reinit/1, random_prune/1)",
    ]
    rec.finish("level 1 group 0")
    rec.finish("level 1 group 1")
    assert "level 2 group 0 (ticket/0, reinit/0)" in rec.names(), "tickets done: level 2 starts"
    assert "level 1 group 2 (reinit/1, random_prune/1)" in rec.names()
    assert [r.level for r in driver.everything] == [0] * 2, "level 1 is not saved before done"
    while rec.submitted:
        rec.finish("level")
    got = driver.everything
    assert [(r.branch, r.replicate, r.level) for r in got] == [
        (r.branch, r.replicate, r.level) for r in expected
    ]
    for a, b in zip(got, expected):
        assert repr(a.history) == repr(b.history)  # NaN (no training loss at 0) != NaN
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name]), (a.branch, a.level, name)

    # a driver that stops with some units of level 1 finished: they are kept and skipped
    path = tmp_path / "run"
    with RunFolder(path, config, checkpoint_seconds=1e9) as folder:
        rec = Recorder()
        driver = _Driver(Study(Experiment(config, data), folder), rec)
        driver.advance()
        rec.finish("level 0 group 0")
        rec.finish("level 1 group 2")  # a finished unit of an unfinished level
    assert (path / ".lth" / "level_01_group_02.pt").is_file()
    with RunFolder(path, config) as folder:
        rec = Recorder()
        driver = _Driver(Study(Experiment(config, data), folder), rec)
        driver.advance()
        assert rec.names() == [
            "level 1 group 0 (ticket/0, reinit/0)",
            "level 1 group 1 (random_prune/0, ticket/1)",
        ], "level 0 resumed from the folder, level 1 group 2 from its kept state"
        while rec.submitted:
            rec.finish("level")
    assert [r.level for r in driver.everything].count(2) == 6
    resumed = {(r.branch, r.replicate, r.level): r for r in driver.everything}
    for b in expected:
        a = resumed[b.branch, b.replicate, b.level]
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name]), (a.branch, a.level, name)


def test_missing_ray_is_one_line_that_says_how_to_install(tmp_path):
    """Without Ray (its import blocked), --executor ray fails before anything is written."""
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from lth.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "run"
    argv = ["run", "--executor", "ray", "--out", str(out), "--levels", "1"]
    done = subprocess.run(
        [sys.executable, "-c", blocker, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lth: error:"), done.stderr
    assert "Ray" in lines[0] and "pip install" in lines[0] and "lth[ray]" in lines[0]
    assert not out.exists()


def test_local_executor_never_imports_ray(tmp_path):
    code = (
        "import sys\n"
        "from lth.cli import main\n"
        "main(['run', '--help'])\n"
        "import lth.study.executors, lth.study.runner\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ on Ray


def test_ray_study_is_identical_to_the_local_one(cluster, data, reference, tmp_path, one_thread):
    ray, _ = cluster
    before = len(lth_tasks(ray))
    assert train(tmp_path / "run", CONFIG, data, RayExecutor()) == reference
    # level 0: one unit (the two dense tickets); levels 1 and 2: three (tickets and controls)
    tasks = lth_tasks_when(ray, lambda tasks: len(tasks) - before >= 1 + 3 + 3)
    assert len(tasks) - before == 1 + 3 + 3, "every unit ran as a Ray task"
    assert {t.worker_pid for t in tasks} - {os.getpid()}, "on Ray's workers"


def test_a_worker_killed_mid_task_is_retried_and_the_study_identical(
    cluster, data, tmp_path, one_thread
):
    """The first unit of level 1 waits in its model's forward pass (ray_factories.lenet_held)
    until its worker is killed: no race with the unit's speed. Ray retries it; the study ends
    as the local executor's, byte for byte."""
    ray, _ = cluster
    hold = Path(os.environ[HOLD])
    # a smaller study (one replicate, one control, levels 0 and 1): its held model trains one
    # unit at a time through the module, here and on Ray
    config = dataclasses.replace(
        CONFIG, model="ray_factories:lenet_held", levels=1, replicates=1, controls=("reinit",)
    )
    killed: list[int] = []
    done = threading.Event()

    def kill_the_caught_unit():
        while not done.is_set() and not (hold / "caught").exists():
            done.wait(0.05)
        if (hold / "caught").exists():
            pid = int((hold / "caught").read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        (hold / "release").touch()

    killer = threading.Thread(target=kill_the_caught_unit, daemon=True)
    killer.start()
    sys.path.insert(0, str(TESTS))
    try:
        reference = train(tmp_path / "local", config, data, LocalExecutor())  # never held
        got = train(tmp_path / "run", config, data, RayExecutor())
    finally:
        sys.path.remove(str(TESTS))
        done.set()
        killer.join()
    assert killed, "no unit of level 1 was caught running"
    assert got == reference


def test_a_failing_factory_on_a_worker_is_one_line_naming_the_unit(
    cluster, data, reference, tmp_path, one_thread
):
    """Levels finished before stay on disk; once fixed, the study resumes (here on Ray after
    starting locally) and ends with the local executor's results."""
    ray, flag = cluster
    # the registered LeNet's initialisation, so that it ends as the reference (a factory's
    # model otherwise starts from its own weights)
    config = dataclasses.replace(CONFIG, model="ray_factories:lenet", init="xavier_normal")
    path = tmp_path / "run"

    class Crash(Exception):
        pass

    def crash(level, group, trainer):
        if level == 1:
            raise Crash

    sys.path.insert(0, str(TESTS))
    try:
        with pytest.raises(Crash):  # level 0 is trained locally, then the driver stops
            train(path, config, data, LocalExecutor(), hook=crash)
        level0 = {k: v for k, v in files(path).items() if "level_00" in k}
        flag.write_text("this node cannot build the model")
        try:
            with pytest.raises(LTHError) as exc:
                train(path, config, data, RayExecutor())
        finally:
            flag.unlink()
        # the units of level 1 run at once: whichever fails first is named
        assert_one_line(exc, "level 1 group", "failed on a Ray worker")
        assert "this node cannot build the model" in str(exc.value)
        assert {k: v for k, v in files(path).items() if "level_00" in k} == level0
        got = train(path, config, data, RayExecutor())
    finally:
        sys.path.remove(str(TESTS))
    assert got == reference


def test_a_sweep_on_ray_runs_its_studies_together_as_locally(cluster, tmp_path, one_thread):
    """lth sweep --executor ray: every study's units go to the cluster at once, each run
    folder ends as the local executor's."""
    ray, _ = cluster
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "levels = 1\niterations = 20\neval_every = 10\nbatch_size = 60\nval_size = 500\n"
        'controls = ["reinit"]\n[vary]\nrate = [0.2, 0.5]\n'
    )
    before = {t.task_id for t in lth_tasks(ray)}
    argv = ["sweep", str(sweep), "--data-dir", str(real_data()), "--quiet", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    data = load_dataset("mnist", real_data(), val_size=500, seed=0)
    for name, config in read_sweep(sweep):
        local = train(tmp_path / "local" / name, config, data, LocalExecutor())
        assert files(tmp_path / "ray" / name) == local
    # Ray's state API may list an earlier test's tasks late: keep this sweep's (named by run)
    mine = ("lth rate-0.2:", "lth rate-0.5:")

    def this_sweeps(tasks):
        names = sorted(t.name for t in tasks if t.task_id not in before)
        return [n for n in names if n.startswith(mine)]

    names = this_sweeps(lth_tasks_when(ray, lambda tasks: len(this_sweeps(tasks)) >= 4))
    assert names == [
        f"lth {run}: level {level} group 0 ({'ticket/0, reinit/0' if level else 'ticket/0'})"
        for run in ("rate-0.2", "rate-0.5")
        for level in (0, 1)
    ]  # the controls start at level 1
