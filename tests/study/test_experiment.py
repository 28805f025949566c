"""The level loop: reset modes, controls, sparsity schedule, determinism, and a real MNIST run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import real_data
from lth.config import ExperimentConfig
from lth.data import load_dataset
from lth.errors import LTHError
from lth.pruning.masks import count_remaining
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", real_data(), val_size=5000, seed=0)


@pytest.fixture(scope="module")
def small(mnist):
    """A 2,000-image slice of real MNIST for the fast invariant tests."""
    from lth.data import dataset_from_tensors

    return dataset_from_tensors(
        "mnist-small", mnist.train_x[:2000], mnist.train_y[:2000], mnist.test_x[:500],
        mnist.test_y[:500], val_size=300, seed=0,
    )  # fmt: skip


def quick(**overrides) -> ExperimentConfig:
    base = dict(levels=3, iterations=40, eval_every=20, batch_size=50, val_size=300)
    return ExperimentConfig(**(base | overrides))


def by_key(results):
    return {(r.branch, r.replicate, r.level): r for r in results}


def expected_counts(total: int, rate: float, levels: int) -> list[int]:
    """Kept weights per level when exactly round(rate x survivors) leave each level."""
    kept = [total]
    for _ in range(levels):
        kept.append(kept[-1] - round(rate * kept[-1]))
    return kept


def test_rewind_resets_survivors_to_theta0_and_sparsity_follows_schedule(small):
    cfg = quick(replicates=2)
    exp = Experiment(cfg, small)
    results = by_key(exp.run())
    for rep in range(2):
        theta0 = exp.theta0(rep)
        for level in range(cfg.levels + 1):
            ticket = results[("ticket", rep, level)]
            for name, w in ticket.init.items():
                if name in ticket.masks:
                    m = ticket.masks[name]
                    assert torch.equal(w[m], theta0[name][m]), "survivors rewound to θ0"
                    assert torch.equal(w[~m], torch.zeros_like(w[~m]))
                    assert torch.equal(ticket.final[name][~m], torch.zeros_like(w[~m]))
                else:
                    assert torch.equal(w, theta0[name]), "biases rewound to θ0"
            counts = count_remaining(ticket.masks)
            for name, (kept, total) in counts.items():
                rate = cfg.output_rate if name == "fc3.weight" else cfg.rate
                assert kept == expected_counts(total, rate, cfg.levels)[level]
            if level:
                prev = results[("ticket", rep, level - 1)]
                for name, m in ticket.masks.items():
                    assert not (m & ~prev.masks[name]).any(), "masks only shrink"
                    # the pruned ones are the smallest trained survivors of the level before
                    dropped = prev.masks[name] & ~m
                    kept_mag = prev.final[name][m].abs()
                    assert prev.final[name][dropped].abs().max() <= kept_mag.min()
    assert not torch.equal(exp.theta0(0)["fc1.weight"], exp.theta0(1)["fc1.weight"])


def test_controls_use_the_tickets_sparsity(small):
    cfg = quick()
    exp = Experiment(cfg, small)
    results = by_key(exp.run())
    theta0 = exp.theta0(0)
    # the controls start at level 1: at level 0 the ticket is the dense network, trained once
    assert [k for k in results if k[2] == 0] == [("ticket", 0, 0)]
    for level in range(1, cfg.levels + 1):
        ticket = results[("ticket", 0, level)]
        reinit = results[("reinit", 0, level)]
        rand = results[("random_prune", 0, level)]
        for name, m in ticket.masks.items():
            assert torch.equal(reinit.masks[name], m), "reinit control reuses the ticket's mask"
            assert int(rand.masks[name].sum()) == int(m.sum()), "same per-layer count"
            if level:
                assert not torch.equal(rand.masks[name], m)
                assert not torch.equal(reinit.init[name][m], theta0[name][m]), "fresh weights"
            rm = rand.masks[name]
            assert torch.equal(rand.init[name][rm], theta0[name][rm]), "random pruning keeps θ0"
        assert reinit.weights_remaining == ticket.weights_remaining == rand.weights_remaining
        if level == 0:  # an all-ones random mask is the ticket itself: the very same network
            assert all(torch.equal(rand.final[n], ticket.final[n]) for n in ticket.final)
            assert repr(rand.history) == repr(ticket.history)


def test_late_rewinding_uses_the_weights_at_iteration_k(small):
    cfg = quick(rewind_iteration=20, levels=2, controls=())
    results = by_key(Experiment(cfg, small).run())
    level0 = results[("ticket", 0, 0)]
    theta_k = level0.snapshots[20]
    assert not torch.equal(theta_k["fc1.weight"], level0.init["fc1.weight"])
    for level in (1, 2):
        ticket = results[("ticket", 0, level)]
        for name, m in ticket.masks.items():
            assert torch.equal(ticket.init[name][m], theta_k[name][m])


def test_finetune_continues_from_trained_weights(small):
    cfg = quick(reset="finetune", levels=2, controls=())
    results = by_key(Experiment(cfg, small).run())
    for level in (1, 2):
        prev, ticket = results[("ticket", 0, level - 1)], results[("ticket", 0, level)]
        for name, m in ticket.masks.items():
            assert torch.equal(ticket.init[name][m], prev.final[name][m])


def test_reinit_reset_draws_new_weights_each_level(small):
    cfg = quick(reset="reinit", levels=2, controls=())
    exp = Experiment(cfg, small)
    results = by_key(exp.run())
    inits = [results[("ticket", 0, lvl)].init["fc1.weight"] for lvl in range(3)]
    m = results[("ticket", 0, 2)].masks["fc1.weight"]
    assert not torch.equal(inits[1][m], inits[2][m])
    assert not torch.equal(inits[2][m], exp.theta0(0)["fc1.weight"][m])


def test_global_pruning_ranks_layers_together_and_respects_exclusions(small):
    cfg = quick(pruning="global", exclude=("fc3.weight",), levels=2, controls=())
    results = by_key(Experiment(cfg, small).run())
    for level in (1, 2):
        counts = count_remaining(results[("ticket", 0, level)].masks)
        assert counts["fc3.weight"][0] == counts["fc3.weight"][1], "excluded layer untouched"
        kept = counts["fc1.weight"][0] + counts["fc2.weight"][0]
        total = counts["fc1.weight"][1] + counts["fc2.weight"][1]
        assert kept == expected_counts(total, cfg.rate, level)[level]
        # global ranking prunes the layers unevenly
        assert counts["fc1.weight"][0] / counts["fc1.weight"][1] != pytest.approx(
            counts["fc2.weight"][0] / counts["fc2.weight"][1], abs=1e-3
        )


def test_batched_and_one_at_a_time_give_the_same_study(small):
    # In double: batched and single products sum in other orders (other kernels on other
    # CPUs), which float32 training amplifies (Adam, then pruning near-ties) past any fixed
    # tolerance; in float64 the two studies stay ~1e-13 apart on every CPU.
    as_double = {f"{s}_x": getattr(small, f"{s}_x").double() for s in ("train", "val", "test")}
    data = dataclasses.replace(small, **as_double)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        together = by_key(Experiment(quick(levels=1), data).run())
        alone = by_key(Experiment(quick(levels=1, max_parallel=1), data).run())
    finally:
        torch.set_default_dtype(before)
    assert together.keys() == alone.keys()
    for key, a in together.items():
        b = alone[key]
        for name in a.masks:
            assert torch.equal(a.masks[name], b.masks[name])
        for name in a.final:
            assert a.final[name].dtype == torch.float64, "the study must train in double"
            torch.testing.assert_close(a.final[name], b.final[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    "overrides",
    [
        {"levels": -1},
        {"levels": 1.5},
        {"rate": 0.0},
        {"rate": 1.0},
        {"output_rate": 2},
        {"pruning": "random"},
        {"reset": "rewind_lr"},
        {"controls": ("not a name",)},
        {"controls": ("reinit", "reinit")},
        {"iterations": 0},
        {"replicates": 0},
        {"lr": -1.0},
        {"optimizer": "rmsprop"},
    ],
)
def test_bad_settings_are_one_line_errors(overrides):
    with pytest.raises(LTHError) as err:
        quick(**overrides)
    assert "\n" not in str(err.value)


def test_bad_model_or_exclusion_is_reported(small):
    with pytest.raises(LTHError, match="lenet_300_100"):
        Experiment(quick(model="lenet_301"), small)
    # which controls exist is the registry's to say (lth.pruning.controls), as for models
    with pytest.raises(LTHError, match="unknown control 'shuffle'; choose from reinit"):
        Experiment(quick(controls=("shuffle",)), small)
    with pytest.raises(LTHError, match="fc1.weight"):
        Experiment(quick(exclude=("fc9.weight",)), small)
    with pytest.raises(LTHError, match="rewind_iteration"):
        Experiment(quick(rewind_iteration=1000), small)


def test_real_mnist_three_levels_above_90_percent_and_deterministic(mnist):
    # evaluated at the start and the end only: the accuracies asserted are the last ones
    cfg = ExperimentConfig(levels=3, iterations=300, eval_every=300, seed=0)
    first = run_experiment(cfg, mnist)
    for r in first:
        assert r.history.test_acc[-1] > 90.0, (r.branch, r.level, r.history.test_acc[-1])
        assert r.history.summary()["test_acc_at_early_stop"] > 90.0
    remaining = sorted({round(r.weights_remaining, 1) for r in first}, reverse=True)
    assert remaining == [100.0, 80.0, 64.1, 51.3]
    second = run_experiment(cfg, mnist)
    for a, b in zip(first, second, strict=True):
        assert (a.branch, a.replicate, a.level) == (b.branch, b.replicate, b.level)
        assert repr(a.history) == repr(b.history)
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name])
            assert torch.equal(a.init[name], b.init[name])


def test_a_diverged_ticket_ends_its_chain(small):
    cfg = quick(optimizer="sgd", lr=1e6, levels=3, controls=())
    results = Experiment(cfg, small).run()
    assert [(r.branch, r.level) for r in results] == [("ticket", 0)]
    assert results[0].history.diverged_at is not None
    assert results[0].summary()["diverged_at"] == results[0].history.diverged_at


def test_group_size_follows_threads_on_cpu_and_shrinks_when_memory_is_short(small, monkeypatch):
    import lth.study.experiment as experiment

    exp = Experiment(quick(), small)
    before = torch.get_num_threads()
    try:
        for threads, expected in [(1, 2), (2, 2), (5, 5)]:
            torch.set_num_threads(threads)
            assert exp.group_size() == expected
        torch.set_num_threads(32)
        assert exp.group_size() == 16, "max_parallel still caps it"
        conv = Experiment(quick(model="lenet5"), small)
        assert conv.group_size() == 1, "conv nets train one at a time on CPU"
        monkeypatch.setattr(experiment, "_free_memory", lambda device: 10 << 20)
        assert exp.group_size() == 1
    finally:
        torch.set_num_threads(before)
