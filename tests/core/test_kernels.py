"""Sparse kernels (lth.core.kernels) against the dense path, in float64; the calibration's cache."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from conftest import assert_one_line
from helpers import F64, make_model, random_masks, synthetic_data
from lth.config import ExperimentConfig
from lth.core import kernels
from lth.core.kernels import Pattern
from lth.core.training import TicketJob, TrainConfig, Trainer
from lth.data import dataset_from_tensors
from lth.errors import LTHError

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


@pytest.mark.parametrize("density", [0.02, 0.1, 0.4])
@pytest.mark.parametrize("k", [1, 3])
def test_pattern_products_equal_dense_ones(density, k, float64):
    g = torch.Generator().manual_seed(int(density * 100) + k)
    mask = (torch.rand(k, 30, 50, generator=g) < density).double()
    w = torch.randn(k, 30, 50, generator=g) * mask
    x = torch.randn(k, 50, 7, generator=g)
    d = torch.randn(k, 30, 7, generator=g)
    shared = torch.randn(50, 7, generator=g)
    p = Pattern(mask)
    v = p.values(w)
    assert v.numel() == int(mask.sum())
    torch.testing.assert_close(p.forward(v, x), w @ x, **F64)
    torch.testing.assert_close(p.forward_shared(v, shared), w @ shared, **F64)
    torch.testing.assert_close(p.input_grad(v, d), w.transpose(1, 2) @ d, **F64)
    out = torch.full((p.nnz,), 7.0)  # compact: one entry per surviving weight, CSR order
    p.weight_grad(d, x, out)
    full = d @ x.transpose(1, 2)
    torch.testing.assert_close(out, full[mask != 0], **F64)  # boolean indexing: row-major


def _train(name: str, k: int, keep: float, kernels_mode: str, shape=(1, 28, 28)):
    data = synthetic_data(shape=shape)
    template = make_model(name, 0, shape)
    jobs = []
    for i in range(k):
        model = make_model(name, i, shape)
        masks = random_masks(model, seed=10 + i, keep=keep)
        jobs.append(TicketJob({n: p.detach() for n, p in model.named_parameters()}, masks, i))
    cfg = TrainConfig(iterations=12, batch_size=20, eval_every=6, kernels=kernels_mode)
    trainer = Trainer(template, jobs, data, cfg)
    return trainer, trainer.run(), jobs


@pytest.mark.parametrize(
    ("name", "k", "keep"),
    [
        ("lenet_300_100", 1, 0.05),  # the hand-written MLP backward
        ("lenet_300_100", 3, 0.3),
        ("lenet5", 1, 0.1),  # conv and linear layers through autograd
        ("lenet5", 2, 0.4),
    ],
)
def test_sparse_training_equals_dense_training(name, k, keep, float64):
    sparse, sparse_results, jobs = _train(name, k, keep, "sparse")
    dense, dense_results, _ = _train(name, k, keep, "dense")
    assert set(sparse.model.patterns) == set(jobs[0].masks) and not dense.model.patterns
    for job, s, d in zip(jobs, sparse_results, dense_results, strict=True):
        for n, t in d.final.items():
            torch.testing.assert_close(s.final[n], t, **F64)
            if n in job.masks:
                assert (s.final[n][~job.masks[n]] == 0).all()  # pruned weights stay 0
        for column in ("train_loss", "val_loss", "test_loss"):
            torch.testing.assert_close(
                torch.tensor(getattr(s.history, column)),
                torch.tensor(getattr(d.history, column)),
                equal_nan=True,  # no training loss before the first step
                **F64,
            )


def test_auto_kernels_follow_the_calibrated_threshold(monkeypatch, tmp_path):
    monkeypatch.delenv("LTH_KERNELS_THRESHOLD")  # the test session's fixed threshold
    monkeypatch.setenv("LTH_KERNELS_CACHE", str(tmp_path))
    key = kernels.machine_key(torch.device("cpu"))
    (tmp_path / "kernels.json").write_text(json.dumps({key: 0.2}))
    monkeypatch.setattr(kernels, "_THRESHOLDS", {})
    assert kernels.threshold("cpu") == 0.2  # read from the cache, not measured
    trainer, _, jobs = _train("lenet_300_100", 1, 0.1, "auto")
    # fc1 and fc2 keep ~10% (below 0.2); the output layer too: all sparse
    assert set(trainer.model.patterns) == set(jobs[0].masks)
    trainer, _, _ = _train("lenet_300_100", 1, 0.5, "auto")
    assert trainer.model.patterns == {}


def test_a_fixed_threshold_overrides_the_calibration_and_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("LTH_KERNELS_CACHE", str(tmp_path))
    key = kernels.machine_key(torch.device("cpu"))
    (tmp_path / "kernels.json").write_text(json.dumps({key: 0.5}))
    monkeypatch.setenv("LTH_KERNELS_THRESHOLD", "0.05")
    assert kernels.threshold("cpu") == 0.05
    trainer, _, _ = _train("lenet_300_100", 1, 0.1, "auto")
    assert trainer.model.patterns == {}  # 10% is above 5%: dense, whatever the cache says
    for bad in ("fast", "1.5", "-0.1"):
        monkeypatch.setenv("LTH_KERNELS_THRESHOLD", bad)
        with pytest.raises(LTHError) as exc:
            kernels.threshold("cpu")
        assert_one_line(exc, "LTH_KERNELS_THRESHOLD", bad)


def test_calibration_is_cached_where_asked_and_never_when_off(monkeypatch, tmp_path):
    monkeypatch.delenv("LTH_KERNELS_THRESHOLD")
    monkeypatch.setattr(kernels, "_THRESHOLDS", {})
    monkeypatch.setenv("LTH_KERNELS_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    value = kernels.threshold("cpu")
    assert value == 0.0 or value in kernels.CALIBRATION_DENSITIES
    assert not (tmp_path / "xdg").exists()
    monkeypatch.setattr(kernels, "_THRESHOLDS", {})
    monkeypatch.delenv("LTH_KERNELS_CACHE")
    kernels.threshold("cpu")
    cached = json.loads((tmp_path / "xdg" / "lth" / "kernels.json").read_text())
    assert list(cached) == [kernels.machine_key(torch.device("cpu"))]


def test_kernels_setting_is_checked():
    with pytest.raises(LTHError, match="unknown kernels 'fast'"):
        ExperimentConfig(kernels="fast")
    assert ExperimentConfig().kernels == "auto" and ExperimentConfig().test_every == 0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_sparse_resume_is_bit_identical_and_checkpoints_keep_the_dense_layout(optimizer):
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    masks = random_masks(model, 1, keep=0.1)
    cfg = TrainConfig(
        iterations=30, batch_size=50, eval_every=10, optimizer=optimizer, momentum=0.9,
        kernels="sparse", test_every=20,
    )  # fmt: skip
    jobs = [TicketJob(model.state_dict(), masks, s) for s in (1, 2)]
    straight = Trainer(model, jobs, data, cfg).run()
    first = Trainer(model, jobs, data, cfg)
    assert first.optimizer.index is not None  # the update runs over the survivors alone
    assert first.run(stop_at=17) is None
    state = copy.deepcopy(first.state_dict())
    dense_cfg = dataclasses.replace(cfg, kernels="dense")
    dense_state = Trainer(model, jobs, data, dense_cfg).optimizer.state_dict()
    for name, value in state["optimizer"].items():  # same shapes as a dense trainer's
        if isinstance(value, list):
            assert [t.shape for t in value] == [t.shape for t in dense_state[name]]
    second = Trainer(model, jobs, data, cfg)
    second.load_state_dict(state)
    for a, b in zip(straight, second.run(), strict=True):
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name])
        assert repr(a.history) == repr(b.history)


def test_a_run_records_its_sparse_threshold_and_a_resume_keeps_it(monkeypatch, tmp_path):
    from helpers import CONFIG
    from lth.configfile import read_run_info
    from lth.study.runner import run_experiment

    monkeypatch.delenv("LTH_KERNELS_THRESHOLD")  # the test session's fixed threshold
    monkeypatch.setenv("LTH_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_THRESHOLDS", {})
    key = kernels.machine_key(torch.device("cpu"))
    (tmp_path / "kernels.json").write_text(json.dumps({key: 0.3}))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g)
    data = dataset_from_tensors("mnist", x[:200], y[:200], x[200:], y[200:], val_size=50)
    config = dataclasses.replace(CONFIG, levels=1, iterations=10)
    run = tmp_path / "run"
    run_experiment(config, data, out=run, device="cpu", quiet=True)
    assert read_run_info(run)["environment"]["sparse_threshold"] == 0.3
    # The machine recalibrates (another value in its cache): the run keeps the one it started with.
    (tmp_path / "kernels.json").write_text(json.dumps({key: 0.05}))
    monkeypatch.setattr(kernels, "_THRESHOLDS", {})
    run_experiment(config, data, out=run, device="cpu", quiet=True)
    assert kernels.threshold("cpu") == 0.3
    assert read_run_info(run)["environment"]["sparse_threshold"] == 0.3
    # A dense-only study records none.
    monkeypatch.setattr(kernels, "_THRESHOLDS", {})
    dense = tmp_path / "dense"
    run_experiment(dataclasses.replace(config, kernels="dense"), data, out=dense, quiet=True)
    assert "sparse_threshold" not in read_run_info(dense)["environment"]
