"""Compact sparse levels: a sparse layer's surviving weights, their gradients and the
optimizer's state live in compact buffers for the whole level (lth.core.engine), against the
dense path in float64 (the oracle), across a mid-level resume on real MNIST, run to run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from helpers import make_model, mnist_slice, random_masks, synthetic_data
from lth.core.training import TicketJob, TrainConfig, Trainer
from lth.runfolder.runs import RunFolder
from lth.study.experiment import Experiment, ExperimentConfig

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

OPTIMIZERS = {
    "adam": dict(optimizer="adam", lr=3e-3, weight_decay=1e-2),
    "sgd": dict(optimizer="sgd", lr=5e-2, momentum=0.9, weight_decay=1e-2),
}


def _trainers(name: str, optimizer: str, keep: float):
    """The same K = 2 tickets on sparse (compact) and on dense kernels."""
    data = synthetic_data()
    template = make_model(name, 0)
    jobs = []
    for i in range(2):
        model = make_model(name, i)
        masks = random_masks(model, seed=20 + i, keep=keep)
        jobs.append(TicketJob({n: p.detach() for n, p in model.named_parameters()}, masks, i))
    cfg = TrainConfig(iterations=100, batch_size=20, **OPTIMIZERS[optimizer])
    return [Trainer(template, jobs, data, dataclasses.replace(cfg, kernels=k)) for k in
            ("sparse", "dense")], jobs  # fmt: skip


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])  # hand-written MLP / autograd
def test_compact_steps_equal_dense_steps_in_float64(name, optimizer, float64):
    (compact, dense), jobs = _trainers(name, optimizer, keep=0.1)
    model = compact.model
    assert model.patterns and model.compact_index is not None and dense.model.compact_index is None
    # Compact: each sparse weight as its survivors alone, the other parameters whole.
    survivors = sum(p.nnz for p in model.patterns.values())
    others = sum(t.numel() for n, t in model.params.items() if n not in model.patterns)
    assert model.live_flat.numel() == survivors + others < model.flat.numel() / 5
    for n, p in model.patterns.items():
        assert model.live[n].shape == (p.nnz,) and model.live_grads[n].shape == (p.nnz,)
    state = compact.optimizer._state_lists()
    assert all(lst[0].shape == model.live_flat.shape for lst in state)
    flat_before = model.flat.clone()
    for _ in range(6):
        compact.step()
        dense.step()
    # No step touched the dense layout: nothing was gathered from or scattered into it.
    assert torch.equal(model.flat, flat_before) and not model.grad_flat.any()
    model.write_dense()
    for n, w in dense.model.params.items():
        torch.testing.assert_close(model.params[n], w, rtol=0, atol=1e-12)
        if n in jobs[0].masks:
            pruned = torch.stack([~job.masks[n] for job in jobs]).reshape(w.shape)
            assert (model.params[n][pruned] == 0).all()  # exactly 0
            assert (model.params[n][~pruned] != flat_before.new_zeros(1)).any()
    assert not torch.equal(model.flat, flat_before)  # the survivors did train
    # The optimizer's state, in the dense layout (as checkpoints keep it), agrees too.
    ours, theirs = compact.optimizer.state_dict(), dense.optimizer.state_dict()
    for key, value in theirs.items():
        if isinstance(value, list):
            for a, b in zip(ours[key], value, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # Evaluation reads the compact weights as they are: the same figures as the dense path.
    x, y = compact.data.val_x, compact.data.val_y
    torch.testing.assert_close(
        torch.tensor(compact.evaluate(x, y)), torch.tensor(dense.evaluate(x, y)), rtol=0,
        atol=1e-10,
    )  # fmt: skip


def test_feature_major_evaluation_sets_give_the_same_figures_bit_for_bit(monkeypatch):
    from lth.core import training

    (compact, _), _ = _trainers("lenet_300_100", "adam", keep=0.1)
    for _ in range(3):
        compact.step()
    assert compact.model.sparse_first
    x, y = compact.data.test_x, compact.data.test_y
    compact.eval_chunk = 17  # several chunks, the last one shorter
    kept = compact.evaluate(x, y)
    assert kept == compact.evaluate(x, y) and id(x) in compact._features
    monkeypatch.setattr(training, "FEATURE_MAJOR_BYTES", 0)  # transposed chunk by chunk
    compact._features.clear()
    assert compact.evaluate(x, y) == kept and not compact._features


def test_loading_weights_into_a_compact_model_reaches_the_compact_buffers():
    (compact, _), jobs = _trainers("lenet_300_100", "adam", keep=0.1)
    model = compact.model
    model.load(1, jobs[0].init | {n: jobs[0].init[n] * m for n, m in jobs[0].masks.items()})
    exported = model.export(1)
    for n, m in jobs[0].masks.items():
        assert torch.equal(exported[n], jobs[0].init[n] * m)
    live = model.live["fc1.weight"]
    assert torch.equal(live, model.patterns["fc1.weight"].values(model.params["fc1.weight"]))


# ------------------------------------------------------------- a real study, resumed mid-level
CONFIG = ExperimentConfig(
    levels=2, iterations=30, eval_every=10, batch_size=20, val_size=100, max_parallel=2,
    kernels="sparse", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3,
)  # fmt: skip


@pytest.fixture(scope="module")
def mnist():
    return mnist_slice(600, 300, val_size=100)


class Crash(Exception):
    pass


def _run(path: Path, data, hook=None, **kw):
    with RunFolder(path, CONFIG, **kw) as folder:
        return Experiment(CONFIG, data).run(folder, hook)


def _files(root: Path) -> dict[str, bytes]:
    """The result files of a run folder (plots, lth's state and the marker excluded)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in (".lth", "plots", ".lth-run")
    }


def test_a_compact_study_resumes_bit_identically_and_repeats_bit_identically(
    mnist, tmp_path, one_thread
):
    straight = tmp_path / "straight"
    results = _run(straight, mnist)
    assert {r.level for r in results} == {0, 1, 2}
    again = tmp_path / "again"
    _run(again, mnist)
    assert _files(again) == _files(straight)  # the same config and seed: the same bytes
    resumed = tmp_path / "resumed"
    for at in [(1, 0, 20), (2, 1, 10)]:  # mid-level, in two levels of sparse layers

        def crash(level, group, trainer, at=at):
            if (level, group, trainer.iteration) == at:
                assert trainer.model.patterns  # the level runs compact
                raise Crash

        with pytest.raises(Crash):
            _run(resumed, mnist, hook=crash, checkpoint_seconds=0)
        assert (resumed / ".lth" / f"level_{at[0]:02d}_group_{at[1]:02d}.pt").exists()
    _run(resumed, mnist)
    assert _files(resumed) == _files(straight)
