"""Your own training loop inside IMP (``run_experiment(train=fn, evaluate=fn2)``): pruned weights
stay exactly 0 under any optimizer, the run folder passes ``lth verify``, a Ctrl-C resumes per
level to the same bits, and each bad loop gets one line and leaves no half-written level."""

from __future__ import annotations

import contextlib
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_one_line
from helpers import guide_example, mnist_slice
from lth import ExperimentConfig, LTHError, dataset_from_tensors, run_experiment
from lth.cli import main
from lth.config import TrainConfig
from lth.configfile import read_run_info
from lth.core.training import TicketJob
from lth.runfolder.csvio import read_csv
from lth.runfolder.readers import load_metrics, load_summary
from lth.runfolder.verify import verify_run
from lth.study.signals import Interrupted
from lth.study.userloop import TrainContext, evaluate_on

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


def blobs(n: int = 300, seed: int = 0):
    """A 3-class task where the class is where a bright blob is."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 6, 6, generator=g) * 0.3
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 2, 1:5] += 2.0
    return dataset_from_tensors("blobs", x[:240], y[:240], x[240:], y[240:], val_size=40)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3))


def sgd_train(model, ctx, *, after=None):
    """A plain loop; ``after(ctx)`` is called after every step (the tests' probes)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = ctx.data.train_x, ctx.data.train_y
    while True:
        for batch in torch.randperm(len(x), generator=ctx.generator).split(20):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            ctx.log(dropout_free=1.0)
            more = ctx.step(loss)
            if after is not None:
                after(ctx)
            if not more:
                return


# ----------------------------------------------------------------------------- masks

OPTIMIZERS = {
    "adam_l2": lambda ps: torch.optim.Adam(ps, lr=0.05, weight_decay=0.1),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    "sgd_momentum": lambda ps: torch.optim.SGD(
        ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1
    ),
}


def masked_context(iterations: int = 30):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(2)
    masks = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()
             if n.endswith("weight")}  # fmt: skip
    job = TicketJob({n: t.clone() for n, t in model.state_dict().items()}, masks, seed=3)

    def evaluate(m):
        return {"val_loss": 1.0, "val_acc": 50.0, "test_acc": 50.0}

    config = TrainConfig(iterations=iterations, eval_every=10)
    ctx = TrainContext.for_network(model, job, "ticket", 0, 1, config, None, evaluate)
    return model, masks, job, ctx


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_under_any_optimizer(name):
    """The gradient hook keeps every optimizer's state of a pruned weight at 0 (so the weight
    never moves); the survivors train; the final weights have exactly 0 where pruned."""
    model, masks, job, ctx = masked_context()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n][~m] == 0).all()), "pruned weights start at 0"
    opt = OPTIMIZERS[name](model.parameters())
    g = torch.Generator().manual_seed(4)
    more = True
    while more:
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, m in masks.items():
            assert bool((params[n].grad[~m] == 0).all()), "gradients are masked"
        opt.step()
        for n, m in masks.items():  # before ctx.step: the optimizer itself left them at 0
            assert bool((params[n][~m] == 0).all()), (name, n)
            for key, state in opt.state[params[n]].items():
                if torch.is_tensor(state) and state.shape == m.shape:
                    assert bool((state[~m] == 0).all()), (name, n, key)
        more = ctx.step()
    assert ctx.steps == 30 and ctx.history.iteration == [0, 10, 20, 30]
    for n, m in masks.items():
        assert bool((ctx.final[n][~m] == 0).all())
        assert not torch.equal(ctx.final[n][m], job.init[n][m]), "the survivors trained"


def test_step_sets_pruned_weights_moved_by_the_loop_back_to_zero():
    """An update that writes into pruned weights (no gradient involved) is undone by
    ctx.step, so the weights lth keeps have exactly 0 where pruned."""
    model, masks, _, ctx = masked_context(iterations=3)
    params = dict(model.named_parameters())
    more = True
    while more:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        more = ctx.step()
        for n, m in masks.items():
            assert bool((params[n][~m] == 0).all())
            assert bool((params[n][m] != 0).any())
    assert all(bool((ctx.final[n][~m] == 0).all()) for n, m in masks.items())


# ----------------------------------------------------------------------------- whole studies


def test_sgd_loop_of_the_guide_runs_imp_on_mnist_and_passes_verify(tmp_path):
    """The guide's plain SGD loop, 2 levels with late rewinding on a slice of real MNIST: the
    run folder passes lth verify (rewind to θk, controls, pruned weights exactly 0, the
    evaluation schedule, summary = metrics) and metrics.csv holds the loop's own column."""
    example = guide_example("sgd_loop.py")
    data = mnist_slice(1000, 500, val_size=200)
    config = ExperimentConfig(levels=2, iterations=40, eval_every=20, batch_size=50,
                              rewind_iteration=20, val_size=200)  # fmt: skip
    out = tmp_path / "run"
    model = example["mlp"](data.input_shape, data.num_classes)
    results = run_experiment(config, data, model=model, train=example["train"], out=out,
                             quiet=True, device="cpu")  # fmt: skip
    # level 0: the dense network once; the controls from level 1
    assert [r.branch for r in results if r.level == 0] == ["ticket"]
    assert {r.branch for r in results if r.level == 1} == {"ticket", "reinit", "random_prune"}
    assert main(["verify", str(out)]) == 0
    ticket = [s for s in load_summary(out) if s.branch == "ticket"]
    assert [s.level for s in ticket] == [0, 1, 2] and ticket[0].test_acc > 70.0
    rows = read_csv(out / "metrics.csv")
    assert [r["lr"] for r in rows[:3]] == ["", "0.05", "0.05"]  # nothing logged before a step
    assert len(load_metrics(out)) == len(rows)
    assert read_run_info(out)["source"]["train"] == "your_loop_example:train"


def test_ctrl_c_in_a_user_loop_resumes_per_level_to_the_same_bits(tmp_path):
    """SIGINT during level 1: the study stops at the next evaluation with level 0 kept and
    no trace of level 1; running it again trains levels 1 and 2 only, and every network's
    weights equal an uninterrupted study's bit for bit; the loop's columns (ctx.log and an
    evaluate's extra key) survive the resume."""
    data, config = blobs(), ExperimentConfig(levels=2, iterations=20, eval_every=5, seed=3)

    def evaluate(model):
        return evaluate_on(model, data) | {"val_margin": 1.5}

    reference = run_experiment(config, data, model=small_net(), train=sgd_train,
                               evaluate=evaluate, quiet=True, device="cpu")  # fmt: skip
    called, sent = [], []

    def interrupt(ctx):
        if ctx.level == 1 and ctx.steps == 7 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    def train(model, ctx):
        called.append((ctx.branch, ctx.level))
        sgd_train(model, ctx, after=interrupt)

    out = tmp_path / "run"
    options = dict(model=small_net(), train=train, evaluate=evaluate, out=out, quiet=True,
                   device="cpu")  # fmt: skip
    with pytest.raises(Interrupted) as stopped:
        run_experiment(config, data, **options)
    assert "level 1 starts over" in str(stopped.value)
    assert {s.level for s in load_summary(out)} == {0}
    assert not list(out.glob("*/*/level_01")) and not list((out / ".lth").rglob("*level_01*"))
    called.clear()
    results = run_experiment(config, data, **options)
    assert {lv for _, lv in called} == {1, 2}
    assert len(results) == len(reference) == 7  # 1 dense network, then 3 per level
    for got, want in zip(results, reference):
        assert (got.branch, got.level) == (want.branch, want.level)
        for name, t in want.final.items():
            assert torch.equal(got.final[name], t), (got.branch, got.level, name)
    verify_run(out)
    rows = read_csv(out / "metrics.csv")
    level0 = [r for r in rows if r["level"] == "0" and r["iteration"] == "20"]
    assert level0 and all(r["dropout_free"] == "1.0" and r["val_margin"] == "1.5" for r in level0)


# ----------------------------------------------------------------------------- bad loops


def never_steps(model, ctx):
    pass


def stops_early(model, ctx):
    for _ in range(3):
        ctx.step()


def ignores_false(model, ctx):
    for _ in range(ctx.iterations + 1):
        ctx.step()


def swallows_the_error(model, ctx):
    for _ in range(ctx.iterations + 1):
        with contextlib.suppress(Exception):
            ctx.step()


def logs_a_reserved_column(model, ctx):
    ctx.log(val_acc=1.0)


BAD = {
    "never_steps": (never_steps, None, "without calling ctx.step()"),
    "stops_early": (stops_early, None, "returned after 3 of its 8 steps"),
    "ignores_false": (ignores_false, None, "ctx.step() was called after it returned False"),
    "swallows_the_error": (swallows_the_error, None, "after it returned False"),
    "reserved_column": (logs_a_reserved_column, None, "cannot be a column of metrics.csv"),
    "evaluate_not_a_dict": (None, lambda m: [1.0], "evaluate returned list"),
    "evaluate_lacks_a_key": (None, lambda m: {"val_loss": 1.0, "val_acc": 2.0}, "'test_acc'"),
    "evaluate_not_a_number": (
        None, lambda m: {"val_loss": "low", "val_acc": 1.0, "test_acc": 1.0}, "not a number"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_loop_gets_one_line_and_leaves_no_half_written_level(case, tmp_path):
    """The bad behaviour starts at level 1: level 0 stays, finished and verifiable; level 1
    leaves nothing behind."""
    bad_train, bad_evaluate, needle = BAD[case]
    data = blobs()

    def train(model, ctx):
        (bad_train if ctx.level == 1 and bad_train else stepper)(model, ctx)

    def stepper(model, ctx):
        while ctx.step():
            pass

    def evaluate(model):
        if bad_evaluate is not None and levels and levels[-1] == 1:
            return bad_evaluate(model)
        return {"val_loss": 1.0, "val_acc": 50.0, "test_acc": 50.0}

    levels = []

    def tracking(model, ctx):
        levels.append(ctx.level)
        train(model, ctx)

    config = ExperimentConfig(levels=1, iterations=8, eval_every=4)
    out = tmp_path / "run"
    with pytest.raises(LTHError) as error:
        run_experiment(config, data, model=small_net(), train=tracking, evaluate=evaluate,
                       out=out, quiet=True, device="cpu")  # fmt: skip
    assert_one_line(error, needle)
    assert {s.level for s in load_summary(out)} == {0}
    assert not list(out.glob("*/*/level_01")) and not list((out / ".lth").rglob("*level_01*"))


def test_evaluate_or_train_that_cannot_run_is_refused_before_anything_is_written(tmp_path):
    data, config = blobs(), ExperimentConfig(levels=1, iterations=8, eval_every=4)
    out = tmp_path / "run"
    with pytest.raises(LTHError) as error:
        run_experiment(config, data, model=small_net(), evaluate=lambda m: {}, out=out)
    assert_one_line(error, "evaluate= needs train=")
    with pytest.raises(LTHError) as error:
        run_experiment(config, data, model=small_net(), train="my_loop", out=out)
    assert_one_line(error, "train must be a function")
    assert not out.exists()


def test_a_user_loop_on_the_ray_executor_is_refused_before_anything_is_written(tmp_path):
    """train= runs in this process: Ray's workers would need the function pickled."""
    pytest.importorskip("ray")
    from lth.study.executors import RayExecutor

    data, config = blobs(), ExperimentConfig(levels=1, iterations=8, eval_every=4)
    out = tmp_path / "run"
    with pytest.raises(LTHError) as error:
        run_experiment(config, data, model=small_net(), train=sgd_train, out=out,
                       executor=RayExecutor())  # fmt: skip
    assert_one_line(error, "use the local executor")
    assert not out.exists()


def test_a_diverging_loop_stops_there_as_the_engine_does():
    """A NaN loss: the network's history ends before it, diverged_at says where, ctx.step
    returned False there (the loop was not asked for more steps)."""
    data, config = blobs(), ExperimentConfig(levels=0, iterations=12, eval_every=4)
    steps = []

    def train(model, ctx):
        more = True
        while more:
            steps.append(ctx.iteration)
            more = ctx.step(math.nan if ctx.iteration >= 5 else 1.0)

    (result, *_) = run_experiment(config, data, model=small_net(), train=train, quiet=True,
                                  device="cpu")  # fmt: skip
    assert result.history.iteration == [0, 4] and result.history.diverged_at == 8
    assert steps[-1] == 7


def test_the_context_example_runs():
    """TrainContext's docstring example (the API reference shows it)."""
    import doctest

    import lth.study.userloop as userloop

    result = doctest.testmod(userloop, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
