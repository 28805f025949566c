"""Fixtures and helpers shared by the test files."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _kernel_calibration_in_a_temporary_folder(tmp_path_factory):
    """The sparse kernels' per-machine calibration (lth.core.kernels) is cached in a folder of the
    test session, never in the user's ~/.cache, and `auto`'s threshold is fixed."""
    before = {k: os.environ.get(k) for k in ("LTH_KERNELS_CACHE", "LTH_KERNELS_THRESHOLD")}
    os.environ["LTH_KERNELS_CACHE"] = str(tmp_path_factory.mktemp("kernels-cache"))
    # `auto` picks the same kernels on every machine: sparse below 20% of a layer's weights (a
    # measured threshold would make which path a test takes depend on the CPU and its load).
    os.environ["LTH_KERNELS_THRESHOLD"] = "0.2"
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def offline_and_isolated(monkeypatch, tmp_path):
    """No test may touch the network, the user's cache or a stray LTH_DATA_DIR.

    ``LTH_OFFLINE=1`` makes the default downloader refuse (tests that download pass their own).
    """
    monkeypatch.setenv("LTH_OFFLINE", "1")
    monkeypatch.delenv("LTH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="session", autouse=True)
def _one_thread_everywhere():
    """The whole session trains on one thread: as fast as two for these small networks, and no
    oversubscription when pytest shares the CPU with other processes (a test that needs more
    threads sets them and puts them back)."""
    before = torch.get_num_threads()
    # LTH_TEST_THREADS: CI's second pass runs the engine tests on 4 threads
    torch.set_num_threads(int(os.environ.get("LTH_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Train on one thread: as fast as two for these small networks, and far less slowed down
    when other processes share the CPU. (Results are compared only between runs that use the
    same number of threads.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_one_line(exc: pytest.ExceptionInfo, *needles: object) -> str:
    """The exception's message is one line and names every needle."""
    msg = str(exc.value)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def _test_data_dir() -> Path:
    """Where the real MNIST / Fashion-MNIST files are: $LTH_TEST_DATA, else ../shared/data."""
    env = os.environ.get("LTH_TEST_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


TEST_DATA = _test_data_dir()


def real_data(*datasets: str) -> Path:
    """The real-data folder, checked to hold ``datasets`` (default mnist); fail, never skip.

    A test that needs the real files and cannot find them fails with what to set.
    """
    for name in datasets or ("mnist",):
        if not (TEST_DATA / name).is_dir():
            pytest.fail(
                f"real test data not found: {TEST_DATA / name} is missing; set LTH_TEST_DATA to "
                "the folder holding mnist/ and fashion-mnist/ (the project's shared/data)",
                pytrace=False,
            )
    return TEST_DATA


@pytest.fixture
def data_dir() -> Path:
    """The real-data folder holding mnist/ (fails with what to set when it is missing)."""
    return real_data("mnist")


# ------------------------------------------------------------------ the shared run folders
#
# Real tiny runs on MNIST, each made once per session (once per xdist worker that needs it) and
# shared by every test file that needs one. A test that only reads a run uses it as it is; a
# test (or module fixture) that writes into one works on a copy (:func:`copy_run`).


def shared_run(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """The run folder ``make(path)`` writes, made once per test session: under xdist by the
    first worker that asks for it (the others wait on a file lock, then read the same folder)
    instead of once per worker. Tests only read it (a test that writes copies it first)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name) / "run"
        make(out)
        return out
    from filelock import FileLock  # lazy: a dependency of torch, only needed under xdist

    root = tmp_path_factory.getbasetemp().parent / f"shared-{name}"  # the session's folder
    with FileLock(f"{root}.lock"):
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)  # left by a worker whose make failed
            root.mkdir()
            make(root / "run")
            (root / "done").touch()
    return root / "run"


def copy_run(run: Path, where: Path) -> Path:
    """A copy of the shared run folder ``run`` at ``where/run`` (links kept as links), for a
    test that writes into it."""
    return Path(shutil.copytree(run, where / "run", symlinks=True))


#: The settings of :func:`tiny_run` (``lth run`` options).
TINY_RUN = ["--levels", "2", "--iterations", "200", "--eval-every", "100", "--val-size", "1000"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, _one_thread_everywhere) -> Path:
    """One real tiny ``lth run`` on MNIST (:data:`TINY_RUN`: 2 levels x 200 iterations, both
    controls), shared by the cli, verify, figure and stability tests; a test that changes a
    run folder copies it first (:func:`copy_run`)."""
    from lth.cli import main  # lazy: conftest loads before any test imports lth

    def make(out: Path) -> None:
        argv = ["run", *TINY_RUN, "--data-dir", str(real_data("mnist")), "--out", str(out)]
        assert main([*argv, "--quiet"]) == 0

    return shared_run(tmp_path_factory, "tiny", make)


#: The settings of :func:`late_rewound_run` (``lth run`` options): :data:`TINY_RUN` rewinding to
#: iteration 50, pruned globally.
LATE_REWOUND_RUN = [*TINY_RUN, "--rewind-iteration", "50", "--pruning", "global"]


@pytest.fixture(scope="session")
def late_rewound_run(tmp_path_factory, _one_thread_everywhere) -> Path:
    """One real tiny ``lth run`` with late rewinding and global pruning
    (:data:`LATE_REWOUND_RUN`: 2 levels x 200 iterations, both controls), shared by the tests
    that read a late-rewound run; a test that changes it copies it first (:func:`copy_run`)."""
    from lth.cli import main  # lazy: conftest loads before any test imports lth

    def make(out: Path) -> None:
        argv = ["run", *LATE_REWOUND_RUN, "--data-dir", str(real_data("mnist")), "--out", str(out)]
        with figures_off():  # no test looks at its figures (tiny_run has them)
            assert main([*argv, "--quiet"]) == 0

    return shared_run(tmp_path_factory, "late", make)


#: The settings of :func:`tensorboard_run` (``lth run`` options).
TENSORBOARD_RUN = ["--levels", "1", "--iterations", "100", "--eval-every", "50", "--val-size",
                   "1000", "--controls", "reinit", "--tensorboard"]  # fmt: skip


@pytest.fixture(scope="session")
def tensorboard_run(tmp_path_factory, _one_thread_everywhere) -> Path:
    """A real tiny ``lth run --tensorboard`` (:data:`TENSORBOARD_RUN`: 1 level x 100
    iterations, the reinit control), its figures then drawn again with ``lth plot`` as a user
    would: every kind of file lth writes into a run folder during and after training."""
    from lth.cli import main  # lazy: conftest loads before any test imports lth

    def make(out: Path) -> None:
        argv = ["run", *TENSORBOARD_RUN, "--data-dir", str(real_data("mnist")), "--out", str(out)]
        assert main([*argv, "--quiet"]) == 0
        assert main(["plot", str(out)]) == 0

    return shared_run(tmp_path_factory, "tensorboard", make)


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory, _one_thread_everywhere) -> Path:
    """A real tiny study pruned hard (:data:`helpers.PRUNED_RUN`: 3 levels x 200 iterations,
    75% of the hidden weights per level, the reinit control): its last level has dead units,
    as the export and shrink tests need. Made through the Python API (``run_experiment``)."""
    from helpers import PRUNED_RUN  # lazy: conftest loads before any test imports lth
    from lth.data import load_dataset  # lazy: as above
    from lth.study.runner import run_experiment  # lazy: as above

    def make(out: Path) -> None:
        data = load_dataset("mnist", real_data("mnist"), val_size=PRUNED_RUN.val_size)
        with figures_off():  # no test looks at its figures
            run_experiment(PRUNED_RUN, data, out=out, quiet=True, device="cpu")

    return shared_run(tmp_path_factory, "pruned", make)


@pytest.fixture
def no_figures(monkeypatch):
    """Studies in this test end without drawing their figures (about 2 s a run): for tests
    that never look at them. The summary statistics and mask analysis are still written."""
    from lth.analysis import plots  # lazy: matplotlib, only for the tests that use it

    monkeypatch.setattr(plots, "plot_runs", lambda *args, **kwargs: {})


@contextlib.contextmanager
def figures_off():
    """:func:`no_figures` for a block (a module or session fixture's studies whose figures no
    test looks at)."""
    from lth.analysis import plots  # lazy: matplotlib, only for the tests that use it

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_runs", lambda *args, **kwargs: {})
        yield


@pytest.fixture
def float64():
    """Build, train and compare in double precision (``torch.set_default_dtype``).

    The engine and its oracles (plain PyTorch, autograd, one ticket at a time, the CPU) compute
    the same sums in other orders: batched against single products, other BLAS kernels on
    other CPUs (AVX2, AVX-512), other thread counts. In float32 that is ~1e-7 apart per step,
    and training amplifies it: Adam turns a gradient that should be ~0 into a full
    learning-rate step of either sign, and a ReLU or argmax near a tie can go either way. So
    two float32 computations agree only as far as the kernels happen to allow. In float64 the
    differences are ~1e-16, far below Adam's eps (1e-8), and stay ~1e-13 after training on
    every CPU; a real bug (a wrong gradient, mask or learning rate) moves weights by ~lr.
    """
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)
