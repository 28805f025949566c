"""TensorBoard event files (issue 16), read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import real_data
from lth.config import ExperimentConfig
from lth.data import dataset_from_tensors, load_dataset
from lth.errors import LTHError
from lth.runfolder.csvio import read_table
from lth.runfolder.manifest import clear_run
from lth.runfolder.tables import METRICS, SUMMARY
from lth.study.runner import run_experiment

CONFIG = ExperimentConfig(
    levels=2, iterations=30, eval_every=10, batch_size=60, val_size=300, controls=("reinit",)
)


@pytest.fixture(scope="module")
def data():
    full = load_dataset("mnist", real_data(), val_size=0, seed=0)
    return dataset_from_tensors(
        "mnist", full.train_x[:3000], full.train_y[:3000], full.test_x[:500],
        full.test_y[:500], val_size=300, seed=0,
    )  # fmt: skip


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_event_files_hold_every_curve_and_the_final_accuracies(data, tmp_path, one_thread):
    run = tmp_path / "run"
    run_experiment(CONFIG, data, out=run, quiet=True, device="cpu", tensorboard=True)
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
    # (the ticket at level 0, 2 branches x levels 1-2) x metrics, then per-level tags per branch
    assert len(expected) == (1 + 2 * 2) * 4 + 2 * 3
    for tag, points in expected.items():
        steps = [s for s, _ in got[tag]]
        assert steps == [s for s, _ in points], tag  # each point once, in order
        for (_, value), (_, want) in zip(got[tag], points):
            assert value == pytest.approx(want, rel=1e-6), tag  # stored as float32
    steps = [s for s, _ in got["ticket/0/test_acc_vs_weights_remaining"]]
    assert steps[0] == 10000 and steps == sorted(steps, reverse=True)  # 100.00% and fewer

    clear_run(run)  # --overwrite removes the event files with the rest of lth's files
    assert not (run / "tensorboard").exists()


def test_tensorboard_without_a_run_folder_is_refused(data):
    with pytest.raises(LTHError, match="needs out="):
        run_experiment(CONFIG, data, quiet=True, device="cpu", tensorboard=True)
