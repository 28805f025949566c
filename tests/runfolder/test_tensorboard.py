"""TensorBoard event files (issue 16), read back with TensorBoard's own EventAccumulator.

The run read is conftest's session ``tensorboard_run`` (``lth run --tensorboard``, 1 level x 100
iterations, the reinit control); the test that clears it works on a copy."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TENSORBOARD_RUN, copy_run
from lth.config import ExperimentConfig
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.runfolder.csvio import read_table
from lth.runfolder.manifest import clear_run
from lth.runfolder.runs import read_config
from lth.runfolder.tables import METRICS, SUMMARY
from lth.study.runner import run_experiment


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_event_files_hold_every_curve_and_the_final_accuracies(tensorboard_run, tmp_path):
    run = copy_run(tensorboard_run, tmp_path)  # cleared at the end
    config = read_config(run)
    assert "--tensorboard" in TENSORBOARD_RUN and config.controls == ("reinit",)
    got = scalars(run)
    metrics = read_table(run / METRICS.file, METRICS)
    summary = read_table(run / SUMMARY.file, SUMMARY)
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in metrics:
        where = f"{row['branch']}/{row['replicate']}/level_{row['level']:02d}"
        for metric in ("train_loss", "val_loss", "val_acc", "test_acc"):
            if row[metric] == row[metric]:  # no training loss before the first step
                expected.setdefault(f"{where}/{metric}", []).append((row["iteration"], row[metric]))
    for row in summary:
        where = f"{row['branch']}/{row['replicate']}"
        step = round(row["weights_remaining"] * 100)
        for tag, value, at in (
            ("test_acc_vs_weights_remaining", row["test_acc"], step),
            ("test_acc_at_early_stop_vs_weights_remaining", row["test_acc_at_early_stop"], step),
            ("test_acc_by_level", row["test_acc"], row["level"]),
        ):
            expected.setdefault(f"{where}/{tag}", []).append((at, value))
    assert sorted(got) == sorted(expected)
    # networks (level 0 once: the dense one; then ticket and reinit per level) x metrics, and
    # the per-branch tags
    assert len(expected) == (1 + 2 * config.levels) * 4 + 2 * 3
    for tag, points in expected.items():
        steps = [s for s, _ in got[tag]]
        assert steps == [s for s, _ in points], tag  # each point once, in order
        for (_, value), (_, want) in zip(got[tag], points):
            assert value == pytest.approx(want, rel=1e-6), tag  # stored as float32
    steps = [s for s, _ in got["ticket/0/test_acc_vs_weights_remaining"]]
    assert len(steps) == config.levels + 1
    assert steps[0] == 10000 and steps == sorted(steps, reverse=True)  # 100.00% and fewer

    clear_run(run)  # --overwrite removes the event files with the rest of lth's files
    assert not (run / "tensorboard").exists()


def test_tensorboard_without_a_run_folder_is_refused():
    # refused before any training: a few random MNIST-shaped images are all it needs
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(400, 1, 28, 28, generator=g), torch.randint(0, 10, (400,), generator=g)
    data = dataset_from_tensors("mnist", x[:300], y[:300], x[300:], y[300:], val_size=100)
    config = ExperimentConfig(levels=1, iterations=30, eval_every=10, batch_size=60,
                              val_size=100, controls=("reinit",))  # fmt: skip
    with pytest.raises(LTHError, match="needs out="):
        run_experiment(config, data, quiet=True, device="cpu", tensorboard=True)
