"""Defects in the science of a study (issue 11), each pinned by a test on real MNIST.

Late rewinding continues the schedule from step k (Frankle et al. 2020, Algorithm 1);
fine-tuning leaves the reinit control its full schedule; the final learning rate counts only
milestones that training reaches; the test set decides nothing; settings that would be
ignored are refused or honoured; weights remaining counts only the prunable weights; no
validation set means no early stop.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from helpers import mnist_slice, quick
from lth.config import TrainConfig
from lth.core.optim import learning_rate
from lth.core.training import History, TicketJob, Trainer
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.pruning.masks import count_remaining
from lth.runfolder.results import LevelResult
from lth.study.experiment import Experiment


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    """2,000 real MNIST training images (300 for validation), 500 test images."""
    return mnist_slice(2000, 500)


def by_key(results):
    return {(r.branch, r.replicate, r.level): r for r in results}


class Schedules:
    """A hook that records, per ticket and level, the iterations and learning rates trained."""

    def __init__(self, monkeypatch):
        self.lrs: dict[tuple[str, int], list[tuple[int, float]]] = {}
        self.configs: dict[tuple[str, int], TrainConfig] = {}
        seen = self
        original = Trainer.step

        def step(trainer: Trainer) -> None:
            c = trainer.config
            lr = learning_rate(c.lr, trainer.iteration, c.milestones, c.gamma, c.warmup)
            for name in trainer.names:
                seen.lrs.setdefault((name, seen.level), []).append((trainer.iteration, lr))
            original(trainer)

        monkeypatch.setattr(Trainer, "step", step)
        self.level = 0

    def hook(self, level: int, group: int, trainer: Trainer) -> None:
        self.level = level
        for name in trainer.names:
            self.configs[name, level] = trainer.config


# ---------------------------------------------------------------- 1. late rewinding


def test_late_rewound_levels_train_from_step_k_to_t_with_the_schedule_at_k(small, monkeypatch):
    """Frankle et al. 2020, Algorithm 1: m ⊙ θk trains from step k to T, the schedule going on
    from step k; the reinit control trains the whole schedule from fresh weights."""
    k, total = 30, 60
    cfg = quick(rewind_iteration=k, milestones=(40,), warmup=20)
    spy = Schedules(monkeypatch)
    spy.level = 0
    results = by_key(Experiment(cfg, small).run(hook=spy.hook))
    # level 0 and the reinit control: iterations 0..T; the ticket and random pruning: k..T
    assert results["ticket", 0, 0].history.iteration == [0, 20, 40, 60]
    assert results["reinit", 0, 1].history.iteration == [0, 20, 40, 60]
    for branch in ("ticket", "random_prune"):
        h = results[branch, 0, 1].history
        assert h.iteration == [30, 40, 60], branch
        # the early stop counts from 0, as at level 0, and skips the untrained start at k
        assert h.summary()["early_stop_iteration"] in (40, 60)
    steps = spy.lrs["ticket/0", 1]
    assert [it for it, _ in steps] == list(range(k, total)), "T - k steps, no more"
    assert [lr for _, lr in steps] == [
        learning_rate(cfg.lr, it, cfg.milestones, cfg.gamma, cfg.warmup) for it in range(k, total)
    ], "no second warm-up, milestones where they were"
    assert [it for it, _ in spy.lrs["reinit/0", 1]] == list(range(total))


@pytest.mark.parametrize("augment", [False, True])
def test_a_trainer_started_at_step_k_sees_the_batches_of_steps_k_on(small, augment):
    """The data order (and augmentation) at step k is the one a run from step 0 with the same
    seed has there (as open_lth, which skips the first k batches of the same order)."""
    cfg = TrainConfig(iterations=40, batch_size=500, eval_every=10)  # 3 steps per epoch
    from lth.core.models import build_model

    if augment:  # crop and flip need 3-channel images: MNIST's, three times
        small = dataset_from_tensors(
            "mnist-rgb", small.train_x.expand(-1, 3, -1, -1), small.train_y,
            small.test_x.expand(-1, 3, -1, -1), small.test_y, val_size=0,
            augmentation="crop_flip",
        )  # fmt: skip
    model = build_model("lenet_300_100", small.input_shape, 10)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    job = TicketJob(model.state_dict(), masks, seed=7)
    from_zero = Trainer(model, [job], small, cfg)
    from_k = Trainer(model, [job], small, cfg, start_iteration=7)
    assert from_k.iteration == 7
    batches = []
    for it in range(12):
        from_zero.iteration = it
        batches.append(from_zero._batch())
    for it in range(7, 12):
        from_k.iteration = it
        x, y = from_k._batch()
        assert torch.equal(x, batches[it][0]) and torch.equal(y, batches[it][1]), it


def test_start_iteration_out_of_range_is_refused(small):
    from lth.core.models import build_model

    model = build_model("lenet_300_100", (1, 28, 28), 10)
    job = TicketJob(model.state_dict(), {}, seed=0)
    with pytest.raises(LTHError, match="start iteration"):
        Trainer(model, [job], small, TrainConfig(iterations=10), start_iteration=11)


# --------------------------------------------------- 2., 3. fine-tuning's learning rate


def test_finetuning_leaves_the_reinit_control_its_full_schedule(small, monkeypatch):
    cfg = quick(reset="finetune", milestones=(20,), gamma=0.5)
    spy = Schedules(monkeypatch)
    Experiment(cfg, small).run(hook=spy.hook)
    full = {lr for _, lr in spy.lrs["ticket/0", 0]}
    assert ("reinit/0", 0) not in spy.lrs, "the controls start at level 1"
    assert spy.lrs["reinit/0", 1] == spy.lrs["ticket/0", 0], "reinit: the whole schedule again"
    assert {lr for _, lr in spy.lrs["reinit/0", 1]} == full
    for name in ("ticket/0", "random_prune/0"):
        assert [lr for _, lr in spy.lrs[name, 1]] == [pytest.approx(cfg.lr * 0.5)] * 60, name


def test_finetuning_rate_counts_only_the_milestones_training_reaches(small, monkeypatch):
    # a milestone at the last iteration is never reached: no step runs at iteration 60
    cfg = quick(reset="finetune", milestones=(20, 60), gamma=0.5, controls=())
    spy = Schedules(monkeypatch)
    Experiment(cfg, small).run(hook=spy.hook)
    assert spy.lrs["ticket/0", 0][-1][1] == pytest.approx(cfg.lr * 0.5)
    assert [lr for _, lr in spy.lrs["ticket/0", 1]] == [pytest.approx(cfg.lr * 0.5)] * 60


# ------------------------------------------------------------ 4. the test set decides nothing


def test_a_non_finite_test_set_neither_stops_nor_ends_a_chain(small):
    test_x = small.test_x.clone()
    test_x[0, 0, 0, 0] = math.inf  # one broken test image: its loss is NaN
    data = dataset_from_tensors(
        "mnist-broken-test", torch.cat([small.train_x, small.val_x]),
        torch.cat([small.train_y, small.val_y]), test_x, small.test_y, val_size=300,
    )  # fmt: skip
    results = by_key(Experiment(quick(controls=()), data).run())
    assert set(results) == {("ticket", 0, 0), ("ticket", 0, 1)}, "the chain goes on"
    for r in results.values():
        assert r.history.diverged_at is None
        assert r.history.iteration == [0, 20, 40, 60]
        assert not math.isfinite(r.history.test_loss[-1])


def test_divergence_is_still_judged_on_training_and_validation(small):
    val_x = small.val_x.clone()
    val_x[0, 0, 0, 0] = math.inf  # a non-finite validation loss is divergence
    data = dataclasses.replace(small, val_x=val_x)
    results = Experiment(quick(controls=()), data).run()
    assert [(r.level, r.history.diverged_at) for r in results] == [(0, 0)]


# ------------------------------------------------- 5. settings that would be ignored


@pytest.mark.parametrize("reset", ["lr_rewind", "finetune", "reinit"])
def test_late_rewinding_with_another_reset_is_refused(reset):
    with pytest.raises(LTHError, match="rewind_iteration") as err:
        quick(rewind_iteration=10, reset=reset)
    assert "\n" not in str(err.value) and reset in str(err.value)


def test_conv_rate_with_global_pruning_is_refused():
    with pytest.raises(LTHError, match="conv_rate") as err:
        quick(pruning="global", conv_rate=0.1)
    assert "\n" not in str(err.value)


def test_output_rate_is_honoured_by_global_pruning(small):
    cfg = quick(pruning="global", rate=0.2, output_rate=0.1, levels=2, controls=())
    results = by_key(Experiment(cfg, small).run())
    for level in (1, 2):
        before = count_remaining(results["ticket", 0, level - 1].masks)
        after = count_remaining(results["ticket", 0, level].masks)
        kept = before["fc3.weight"][0]
        assert after["fc3.weight"][0] == kept - round(0.1 * kept), "output layer at its rate"
        ranked = sum(before[n][0] for n in ("fc1.weight", "fc2.weight"))
        assert sum(after[n][0] for n in ("fc1.weight", "fc2.weight")) == ranked - round(
            0.2 * ranked
        ), "the other layers ranked together"


def test_output_rate_is_honoured_with_a_target(small):
    """With --target the output layer keeps target ** (ln(1 - output_rate) / ln(1 - rate)): as
    many levels at the two rates would leave (Frankle & Carbin prune it at half the rate)."""
    cfg = quick(target=0.3, levels=2, controls=())
    results = by_key(Experiment(cfg, small).run())
    counts = count_remaining(results["ticket", 0, 2].masks)
    share = math.log(1 - cfg.output_rate) / math.log(1 - cfg.rate)
    for name, (kept, total) in counts.items():
        goal = cfg.target**share if name == "fc3.weight" else cfg.target
        assert kept == round(total * goal), name


# -------------------------------------------------------------- 6. weights remaining


def test_weights_remaining_counts_only_the_prunable_weights(small):
    cfg = quick(exclude=("fc3.weight",), controls=())
    results = by_key(Experiment(cfg, small).run())
    ticket = results["ticket", 0, 1]
    counts = count_remaining(ticket.masks)
    kept = counts["fc1.weight"][0] + counts["fc2.weight"][0]
    total = counts["fc1.weight"][1] + counts["fc2.weight"][1]
    assert ticket.weights_remaining == pytest.approx(100.0 * kept / total)
    assert ticket.summary()["weights_remaining"] == ticket.weights_remaining
    assert round(ticket.weights_remaining, 6) == 80.0


def test_weights_remaining_of_a_level_result_leaves_excluded_layers_out():
    masks = {"a": torch.zeros(10, dtype=torch.bool), "b": torch.ones(30, dtype=torch.bool)}
    masks["a"][:5] = True
    result = LevelResult("ticket", 0, 1, masks, {}, {}, History(), exclude=("b",))
    assert result.weights_remaining == 50.0
    assert LevelResult("ticket", 0, 1, masks, {}, {}, History()).weights_remaining == 87.5


# ------------------------------------------------------------- 7. no validation set


def test_no_validation_set_leaves_the_early_stop_empty_and_says_so(small, capsys):
    data = dataset_from_tensors(
        "no-val", small.train_x, small.train_y, small.test_x, small.test_y, val_size=0
    )
    results = Experiment(quick(val_size=0), data).run()
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "validation" in err, err
    for r in results:
        s = r.summary()
        assert s["early_stop_iteration"] is None and s["test_acc_at_early_stop"] is None
        assert s["test_acc"] == r.history.test_acc[-1]
