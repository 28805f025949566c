"""Where the units of a study train: in this process (local) or as Ray tasks on a cluster.

A unit is one training group of a level as :meth:`Experiment.units` forms it, so a unit's
result is the same file whichever executor trained it. The local executor trains the units
one after another in this process (:meth:`Experiment.run`). The Ray executor submits them as
Ray tasks with their true dependencies: a level is planned as soon as the tickets of the level
before are trained (each replicate's chain of tickets is sequential), all units of a planned
level (the ticket and its controls, every replicate) run in parallel, and so do the units of
other studies submitted together. The driver (this process) alone reads and writes the run
folder through the study's Store: a worker receives the configuration, the data (once per
worker), the unit's starting weights and masks, and returns the trained weights, histories
and the unit's final training state. A finished unit of an unfinished level is kept as its
group's checkpoint, so a resume (with either executor) skips it. Ray is imported only here,
only when the Ray executor is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lth.errors import LTHError
from lth.study.experiment import Experiment, Hook, LevelResult, MemoryStore, Store, Unit, chains
from lth.study.signals import Interrupted

EXECUTORS = ("local", "ray")
INSTALL_RAY = "pip install 'lth[ray]' (or pip install 'ray[default]')"


@dataclass
class Study:
    """One study for an executor: the experiment, where its results go, and who is told.

    ``hook(level, group, trainer)`` is called at every evaluation of a unit trained in this
    process (progress bars, checkpoints); ``report(text)`` gets one line per unit trained
    elsewhere. ``label`` names the study in messages (a sweep's run folder).
    """

    experiment: Experiment
    store: Store
    hook: Hook | None = None
    report: Callable[[str], None] | None = None
    label: str = ""


class LocalExecutor:
    """Trains every unit in this process, study after study: lth's default."""

    name = "local"
    together = False  # studies run one after another

    def run(
        self, studies: Sequence[Study], stop: Callable[[], str | None] | None = None
    ) -> list[list[LevelResult]]:
        """Run (or resume) every study; returns each one's results, level by level."""
        return [s.experiment.run(s.store, s.hook) for s in studies]


def get_executor(name: str, address: str | None = None, threads: int = 0):
    """The executor named ``local`` or ``ray`` (``address``: a Ray cluster's head, or None
    to start a local one; ``threads``: CPU threads, and CPUs asked of Ray, per unit)."""
    if name == "local":
        if address:
            raise LTHError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, threads)
    raise LTHError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


def import_ray():
    """The ``ray`` module, or a one-line LTHError saying how to install it."""
    try:
        import ray  # lazy: ray, only for the Ray executor
    except ImportError as e:
        raise LTHError(
            f"--executor ray needs Ray, which is not installed ({e}); install it with {INSTALL_RAY}"
        ) from None
    return ray


class RayExecutor:
    """Trains units as Ray tasks; the driver (this process) keeps the run folders.

    ``address``: the head of a running cluster (``ray start --head`` prints it), or None to
    join the cluster this process already uses, else start a local one. ``threads``: CPU
    threads per unit, and the CPUs each task asks of Ray (0: one). A CUDA study's tasks ask
    for one GPU each. A task whose worker dies is retried ``retries`` times by Ray.
    """

    name = "ray"
    together = True  # studies run together

    def __init__(self, address: str | None = None, threads: int = 0, retries: int = 3):
        import_ray()  # asked for: fail now, before anything is written, if it is missing
        if address:
            check_ray_address(address)
        self.address = address
        self.threads = max(1, int(threads))
        self.retries = retries

    def run(
        self, studies: Sequence[Study], stop: Callable[[], str | None] | None = None
    ) -> list[list[LevelResult]]:
        """Run (or resume) every study, all at once; returns each one's results."""
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            _start(ray, self.address)
        try:
            return self._run(ray, studies, stop)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, studies, stop) -> list[list[LevelResult]]:
        remote = ray.remote(_train_unit)
        shared: dict[int, object] = {}  # id(object) -> its ObjectRef, put once

        def put(obj):
            if id(obj) not in shared:
                shared[id(obj)] = (ray.put(obj), obj)  # keep obj alive: ids stay unique
            return shared[id(obj)][0]

        pending: dict = {}  # ObjectRef -> (driver, unit)

        def submit(driver: _Driver, unit: Unit, state: dict | None) -> None:
            e = driver.experiment
            gpu = e.device.type == "cuda"
            task = remote.options(
                num_cpus=self.threads,
                num_gpus=1 if gpu else 0,
                max_retries=self.retries,
                name=f"lth {driver.where(unit)}",
            )
            template = None if e.model_from_config else [put(e.template)]
            args = (e.config, e.trust, template, [put(e.data)], unit, state, self.threads,
                    e.device.type)  # fmt: skip
            pending[task.remote(*args)] = (driver, unit)

        drivers = [_Driver(s, submit) for s in studies]
        try:
            for d in drivers:
                d.advance()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                if stop is not None and stop():
                    raise Interrupted(
                        stop(), "finished units are saved; units in flight start over"
                    )
                for ref in done:
                    driver, unit = pending.pop(ref)
                    try:
                        trained, state = ray.get(ref)
                    except Exception as e:  # the task failed for good, or its node is gone
                        raise LTHError(
                            f"{driver.where(unit)} failed on a Ray worker: {_cause(e)}; the units "
                            "finished before are saved: fix it and run again to resume"
                        ) from None
                    driver.finished(unit, trained, state)
                    driver.advance()
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
        return [d.everything for d in drivers]


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """A Ray head at ``host:port`` (or ``ray://host:port``) must accept a TCP connection, so
    that an unreachable cluster is bad input before any run folder is made. Other forms
    (``auto``) are left to Ray."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except (OSError, OverflowError) as e:
        problem = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or "timed out"
        raise LTHError(
            f"cannot reach the Ray cluster at --ray-address {address} ({problem}); start it "
            "with 'ray start --head' there, or check the address"
        ) from None


def _start(ray, address: str | None) -> None:
    """Join the cluster at ``address``, or start a local one (no dashboard) whose workers run
    at lth's own priority (Ray's default adds 15 to their niceness, which starves them on a
    shared machine; ``RAY_worker_niceness`` set by the user wins)."""
    options = {"address": address} if address else {"include_dashboard": False}
    if not address:
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(**options, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        problem = " ".join(str(e).split())[:300]
        raise LTHError(f"cannot start or reach {where}: {problem}") from None


def _cause(error: Exception) -> str:
    """What went wrong in a failed Ray task, on one line: the worker's own exception."""
    cause = getattr(error, "cause", None) or error
    text = " ".join(str(cause).split())
    if isinstance(cause, LTHError):
        return text
    if "\n" in str(cause) or len(text) > 300:  # Ray's own errors carry a traceback
        text = text.split(" Traceback ")[0][:300]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


class _Driver:
    """One study's level loop on Ray: plans each level once the tickets of the level before
    are trained, submits its units, and saves finished levels in order through the store."""

    def __init__(self, study: Study, submit: Callable[[_Driver, Unit, dict | None], None]):
        self.experiment = e = study.experiment
        self.store = study.store or MemoryStore()
        self.report = study.report
        self.label = study.label
        self.submit = submit
        self.everything: list[LevelResult] = []
        self.level0: dict[int, LevelResult] = {}
        self.levels: dict[int, _Level] = {}  # planned levels not yet saved
        self.tickets: dict[int, dict[int, LevelResult]] = {}  # level -> its chains
        self.saved = -1
        e.warn_without_validation()
        for level in range(e.config.levels + 1):
            results = e.finished_level(self.store, level)
            if results is None:
                break
            self.saved = level
            self.everything.extend(results)
            self._tickets_done(level, results)

    def where(self, unit: Unit) -> str:
        """The unit's name, after the study's label if it has one."""
        return f"{self.label}: {unit.name}" if self.label else unit.name

    def _tickets_done(self, level: int, results: list[LevelResult]) -> None:
        self.tickets[level] = chains(results)
        if level == 0:
            self.level0 = dict(self.tickets[0])

    def advance(self) -> None:
        """Plan and submit every level whose tickets' parents are trained."""
        e = self.experiment
        while True:
            level = max([self.saved, *self.levels]) + 1
            if level > e.config.levels:
                return
            if level > 0 and level - 1 not in self.tickets:
                return  # a ticket of the level before is still training
            previous = self.tickets.get(level - 1, {})
            if level > 0 and not previous:
                return  # every chain ended (diverged)
            planned = e.plan(level, previous, self.level0)
            first = self.store.load_checkpoint(level, 0)
            units = e.units(level, planned, e.level_group_size(first))
            self.levels[level] = _Level(planned, units)
            for unit in units:
                state = first if unit.index == 0 else self.store.load_checkpoint(level, unit.index)
                if state is not None and state["iteration"] >= unit.train_config.iterations:
                    done = e.trainer(unit, state).run()  # a finished unit: nothing to train
                    self.finished(unit, done, None)
                else:
                    self.submit(self, unit, state)

    def finished(self, unit: Unit, trained, state: dict | None) -> None:
        """Take a trained unit; save its level when complete, else keep the unit."""
        level = self.levels[unit.level]
        level.trained |= self.experiment.unit_results(unit, trained)
        level.waiting.discard(unit.index)
        if self.report is not None and state is not None:
            self.report(f"{unit.name} trained")
        if unit.level not in self.tickets and level.tickets <= level.trained.keys():
            ticket_results = [level.trained[k] for k in level.tickets]
            self._tickets_done(unit.level, ticket_results)
        while self.saved + 1 in self.levels and not self.levels[self.saved + 1].waiting:
            self.saved += 1
            done = self.levels.pop(self.saved)
            results = self.experiment.level_results(done.planned, done.trained)
            self.store.save_level(self.saved, results)
            self.everything.extend(results)
        if state is not None and self.saved < unit.level:
            self.store.save_unit(unit.level, unit.index, state)


class _Level:
    """A planned level: its jobs, its units and what has come back."""

    def __init__(self, planned, units: list[Unit]):
        self.planned = planned
        self.units = units
        self.waiting = {u.index for u in units}
        self.trained: dict[tuple[str, int], LevelResult] = {}
        self.tickets = {("ticket", r) for branch, r, job in planned if branch == "ticket"}


# ----------------------------------------------------------------------------- the worker

_WORKER_CACHE: dict[tuple, Experiment] = {}


def _train_unit(config, trust, template, data, unit: Unit, state, threads: int, device: str):
    """A Ray task: train one unit from its jobs (and ``state``, a checkpoint); returns the
    trained results and the unit's final training state. ``template`` and ``data`` come as
    ``[ObjectRef]`` (fetched once per worker); ``trust`` is the driver's
    :class:`~lth.usercode.CodeTrust`, so a worker imports only the code the driver may."""
    import ray  # lazy: ray, in a Ray worker

    torch.set_num_threads(threads)
    key = (repr(config), repr(trust), data[0].hex(), template[0].hex() if template else None,
           device)  # fmt: skip
    experiment = _WORKER_CACHE.get(key)
    if experiment is None:
        dataset = _on_device(ray.get(data[0]), device)
        model = ray.get(template[0]) if template else None
        _WORKER_CACHE.clear()  # one study's data at a time per worker
        experiment = _WORKER_CACHE[key] = Experiment(config, dataset, device, model, trust=trust)
    trainer = experiment.trainer(unit, state)
    trained = trainer.run()
    return trained, trainer.state_dict()


def _on_device(data, device: str):
    """The dataset with its tensors on ``device`` (a CUDA worker)."""
    if torch.device(device).type == "cpu":
        return data
    moved = {
        f.name: getattr(data, f.name).to(device)
        for f in dataclasses.fields(data)
        if f.name.endswith(("_x", "_y"))
    }
    return dataclasses.replace(data, **moved)


__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "Study", "get_executor", "import_ray"]
