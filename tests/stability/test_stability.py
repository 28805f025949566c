"""``lth stability`` (Frankle et al. 2020, linear mode connectivity) on real tiny MNIST runs: the
instability recomputed from the written errors, the path's ends against the copies' own
errors, copies that differ only in data order, masks along the path, BatchNorm statistics,
resuming, --find-rewind, figures, and one-line errors.

The run analysed is a copy of conftest's session ``tiny_run`` (2 levels x 200 iterations):
its level-1 ticket."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TEST_DATA, TINY_RUN, assert_one_line, copy_run, real_data
from helpers import mnist_slice
from lth.cli import main
from lth.core.fileio import load_tensors
from lth.data import load_dataset
from lth.errors import LTHError
from lth.runfolder.csvio import read_table
from lth.runfolder.layout import level_dir
from lth.runfolder.runs import read_config
from lth.runfolder.tables import STABILITY_COPIES, STABILITY_ERRORS, STABILITY_SUMMARY, SUMMARY
from lth.stability.measure import analyze_level, find_rewind, train_copies
from lth.stability.paths import PathEvaluator, alphas, instability, interpolate
from lth.stability.store import StabilityFolder
from lth.study.experiment import derive_seed
from lth.study.signals import Interrupted

COPIES, POINTS = 3, 5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the shared real tiny run (2 levels x 200 iterations, conftest), which the
    analyses here write into."""
    assert TINY_RUN[:4] == ["--levels", "2", "--iterations", "200"]  # what the tests expect
    return copy_run(tiny_run, tmp_path_factory.mktemp("stability"))


@pytest.fixture(scope="module")
def data(run):
    """The run's data (the same split as the run's)."""
    c = read_config(run)
    return load_dataset(c.dataset, TEST_DATA, val_size=c.val_size, seed=c.seed)


@pytest.fixture(scope="module")
def level1(run, data) -> dict:
    """The instability of the level-1 ticket: 3 copies (3 pairs), 5 points."""
    return analyze_level(run, 1, copies=COPIES, points=POINTS, data=data, quiet=True)


def tables(run: Path, name: str):
    root = run / "stability"
    errors = read_table(root / f"{name}.csv", STABILITY_ERRORS)
    copies = read_table(root / f"{name}_copies.csv", STABILITY_COPIES)
    summary = read_table(root / "summary.csv", STABILITY_SUMMARY)
    return errors, copies, summary


def test_instability_is_the_papers_definition():
    # max over alpha of err(alpha) - mean(err(0), err(1)), by hand
    assert instability([2.0, 5.0, 3.0, 4.0]) == pytest.approx(5.0 - 3.0)
    assert instability([1.0, 1.0, 1.0]) == 0.0
    assert instability([1.0, 0.5, 3.0]) == pytest.approx(1.0)  # an end can be the max
    assert alphas(5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_the_summary_is_recomputed_from_the_written_errors(run, level1):
    errors, copies, summary = tables(run, "ticket_r0_level_01")
    pairs = {(i, j) for i in range(COPIES) for j in range(i + 1, COPIES)}
    assert {r["pair"] for r in errors} == {f"{i}-{j}" for i, j in pairs}
    assert len(errors) == len(pairs) * POINTS
    [row] = [r for r in summary if r["analysis"] == "level" and r["level"] == 1]
    for split in ("test", "train"):
        per_pair = []
        for i, j in sorted(pairs):
            path = sorted((r for r in errors if r["pair"] == f"{i}-{j}"), key=lambda r: r["alpha"])
            assert [r["alpha"] for r in path] == [0.0, 0.25, 0.5, 0.75, 1.0]
            values = [r[f"{split}_error"] for r in path]
            per_pair.append(max(values) - (values[0] + values[-1]) / 2)
        mean = sum(per_pair) / len(per_pair)
        std = (sum((v - mean) ** 2 for v in per_pair) / (len(per_pair) - 1)) ** 0.5
        assert row[f"{split}_instability_mean"] == pytest.approx(mean, abs=1e-9)
        assert row[f"{split}_instability_std"] == pytest.approx(std, abs=1e-9)
    assert row["stable"] == ("yes" if row["test_instability_mean"] < 2 else "no")
    assert level1["test_instability_mean"] == row["test_instability_mean"]
    [ticket] = [r for r in read_table(run / "summary.csv", SUMMARY)
                if (r["branch"], r["replicate"], r["level"]) == ("ticket", 0, 1)]  # fmt: skip
    assert row["weights_remaining"] == pytest.approx(ticket["weights_remaining"])
    assert row["copies"] == COPIES and row["pairs"] == 3 and row["points"] == POINTS


def test_the_ends_of_each_path_are_the_copies_own_final_errors(run, level1, data):
    errors, copies, _ = tables(run, "ticket_r0_level_01")
    own = {r["copy"]: r["test_error"] for r in copies}  # from each copy's own training
    for r in errors:
        i, j = map(int, r["pair"].split("-"))
        if r["alpha"] == 0.0:
            assert r["test_error"] == own[i]
        if r["alpha"] == 1.0:
            assert r["test_error"] == own[j]
    # and an independent evaluation of copy 0 with the plain nn.Module agrees
    from lth.core.models import build_model

    model = build_model("lenet_300_100", (1, 28, 28), 10)
    model.load_state_dict(load_tensors(run / "stability/ticket_r0_level_01/copy_0_k0.safetensors"))
    with torch.no_grad():
        wrong = (model(data.test_x).argmax(1) != data.test_y).sum().item()
    assert abs(100.0 * wrong / len(data.test_y) - own[0]) <= 0.02  # float rounding: 2 images


def test_copies_differ_only_in_data_order_and_masks_hold_along_the_path(run, level1, data):
    _, copies, _ = tables(run, "ticket_r0_level_01")
    seeds = [int(r["seed"]) for r in sorted(copies, key=lambda r: r["copy"])]
    c = read_config(run)
    assert seeds == [derive_seed(c.seed, "stability", "ticket", 0, 1, i) for i in range(COPIES)]
    assert len(set(seeds)) == COPIES
    folder = level_dir(run, "ticket", 0, 1)
    start, masks = (
        load_tensors(folder / "init.safetensors"),
        load_tensors(folder / "mask.safetensors"),
    )
    masks = {n: m.bool() for n, m in masks.items()}
    finals = [load_tensors(run / f"stability/ticket_r0_level_01/copy_{i}_k0.safetensors")
              for i in range(COPIES)]  # fmt: skip
    # retrained from the level's start with the same seeds, in the same places of the stack:
    # the same weights, bit for bit; the same seed in another place of the stack: the same
    # network up to float rounding, far closer than copies of other seeds (only the data
    # order tells copies apart)
    from lth.core.models import build_model

    template = build_model("lenet_300_100", (1, 28, 28), 10)
    train = read_config(run).train_config(data.train_x.shape[0])
    again = train_copies(template, data, train, start, masks, [seeds[0], seeds[1], seeds[0]])
    for name in finals[0]:
        assert torch.equal(again[0].final[name], finals[0][name])
        assert torch.equal(again[1].final[name], finals[1][name])
    same = max((again[2].final[n] - again[0].final[n]).abs().max().item() for n in masks)
    other = max((finals[1][n] - finals[0][n]).abs().max().item() for n in masks)
    assert same < 1e-4 < 1e-2 < other, (same, other)
    for a in alphas(POINTS) + [0.37]:
        point = interpolate(finals[0], finals[1], a)
        for name, m in masks.items():
            assert (point[name][~m] == 0).all(), (a, name)
            assert m.sum() < m.numel()  # level 1 prunes every layer
    assert interpolate(finals[0], finals[1], 0.0)["fc1.weight"].equal(finals[0]["fc1.weight"])
    assert interpolate(finals[0], finals[1], 1.0)["fc1.weight"].equal(finals[1]["fc1.weight"])


def test_rerunning_is_deterministic_and_resumes_without_retraining(run, level1, data):
    root = run / "stability"
    before = (root / "ticket_r0_level_01.csv").read_bytes()
    weights = root / "ticket_r0_level_01" / "copy_0_k0.safetensors"
    stamp = weights.stat().st_mtime_ns
    (root / "ticket_r0_level_01.csv").unlink()  # the errors are measured again from the copies
    again = analyze_level(run, 1, copies=COPIES, points=POINTS, data=data, quiet=True)
    assert (root / "ticket_r0_level_01.csv").read_bytes() == before
    assert weights.stat().st_mtime_ns == stamp
    assert again == level1 or all(
        again[k] == level1[k] or again[k] != again[k] for k in level1
    )  # NaN std of one pair compares unequal


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path):
    data = mnist_slice(1200, 200)
    from lth.config import TrainConfig
    from lth.core.models import build_model
    from lth.pruning.masks import ones_mask

    template = build_model("lenet_300_100", (1, 28, 28), 10)
    start = {n: t.detach().clone() for n, t in template.state_dict().items()}
    masks = ones_mask(template)
    config = TrainConfig(iterations=60, eval_every=20, batch_size=50)
    whole = train_copies(template, data, config, start, masks, [1, 2])
    calls = []

    def stop():
        calls.append(1)
        return "SIGINT" if len(calls) == 2 else None

    with StabilityFolder(tmp_path, "x", {}, checkpoint_seconds=1e9) as folder:
        with pytest.raises(Interrupted):
            train_copies(template, data, config, start, masks, [1, 2], folder=folder, stop=stop)
        assert (tmp_path / "stability/x/checkpoint_copies_0.pt").is_file()
        resumed = train_copies(template, data, config, start, masks, [1, 2], folder=folder)
    for a, b in zip(whole, resumed):
        assert all(torch.equal(a.final[n], b.final[n]) for n in a.final)


class _BatchNormNet(nn.Module):
    """A small MLP with BatchNorm (a general model: trained and evaluated one at a time)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(784, 16), nn.BatchNorm1d(16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


def test_batchnorm_statistics_are_recomputed_on_the_fixed_batches():
    data = mnist_slice(1200, 200)
    torch.manual_seed(0)
    model = _BatchNormNet()
    from lth.config import TrainConfig
    from lth.core.training import TicketJob, Trainer
    from lth.pruning.masks import ones_mask

    weights = {n: t.detach().clone() for n, t in model.state_dict().items()}
    weights["bn.running_mean"] += 5.0  # stale statistics that must not survive
    config = TrainConfig(iterations=10, batch_size=50)
    evaluator = PathEvaluator(model, data, config, seed=3, device="cpu")
    assert evaluator.batchnorm and len(evaluator.bn_batches) >= 1
    trainer = Trainer(model, [TicketJob(weights, ones_mask(model), 0)], data, config)
    evaluator._recompute_statistics(trainer)
    bn = trainer.model.module.bn
    with torch.no_grad():  # the oracle: mean and unbiased variance over the same batches
        h = [model.fc1(x.flatten(1)) for x in evaluator.bn_batches]
        mean = torch.stack([b.mean(0) for b in h]).mean(0)
        var = torch.stack([b.var(0, unbiased=True) for b in h]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    rows = evaluator.errors(weights, weights, ones_mask(model), [0.0, 0.5, 1.0])
    assert rows[0] == rows[1] == rows[2]  # one network along the whole path
    # a model the stacked engine cannot run trains its copies one at a time
    copies = train_copies(model, data, config, weights, ones_mask(model), [5, 6])
    assert len(copies) == 2 and not torch.equal(
        copies[0].final["fc1.weight"], weights["fc1.weight"]
    )
    assert any(not torch.equal(copies[0].final[n], copies[1].final[n]) for n in weights)
    path = evaluator.errors(copies[0].final, copies[1].final, ones_mask(model), alphas(3))
    assert len(path) == 3 and all(0 <= e <= 100 for pair in path for e in pair)


def test_find_rewind_forks_from_theta_k_and_reports_the_earliest_stable_k(run, data):
    rows, best = find_rewind(run, 1, candidates=[0, 100, 999], copies=2, points=3, data=data,
                             quiet=True)  # fmt: skip
    assert [r["k"] for r in rows] == [0, 100]  # 999 is past the 200 iterations
    stable = [r["k"] for r in rows if r["test_instability_mean"] < 2.0]
    assert best == (min(stable) if stable else None)
    root = run / "stability" / "ticket_r0_level_01_rewind"
    masks = load_tensors(level_dir(run, "ticket", 0, 1) / "mask.safetensors")
    # θ0 of the parent is the run's own θ0; at k = 0 the copies start from the level's start
    theta0 = load_tensors(level_dir(run, "ticket", 0, 0) / "init.safetensors")
    parent0 = load_tensors(root / "parent_k0.safetensors")
    assert all(torch.equal(parent0[n], theta0[n]) for n in theta0)
    init1 = load_tensors(level_dir(run, "ticket", 0, 1) / "init.safetensors")
    assert all(torch.equal(parent0[n] * masks[n] if n in masks else parent0[n], init1[n])
               for n in init1)  # fmt: skip
    # θ100 is level 0's training at iteration 100: the run's test accuracy there agrees
    parent100 = load_tensors(root / "parent_k100.safetensors")
    assert any(not torch.equal(parent100[n], parent0[n]) for n in parent0)
    _, _, summary = tables(run, "ticket_r0_level_01_rewind")
    assert {r["k"] for r in summary if r["analysis"] == "rewind"} == {0, 100}


def test_figures_are_drawn_from_the_csv_files(run, level1):
    from lth.stability.plots import plot_stability

    files = plot_stability(run)
    names = {f.stem for f in files}
    assert {"ticket_r0_level_01_error", "instability_vs_weights"} <= names
    errors, _, _ = tables(run, "ticket_r0_level_01")
    from lth.stability.plots import error_figure

    fig = error_figure(errors, "t")
    [line] = [a for a in fig.axes[0].lines if a.get_gid() == "test:k=0"]
    at_half = statistics.fmean(r["test_error"] for r in errors if r["alpha"] == 0.5)
    assert line.get_ydata()[2] == pytest.approx(at_half)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--level", "7"], "level 7 is out of range"),
        (["--level", "1", "--copies", "1"], "--copies must be 2 or more"),
        (["--level", "1", "--points", "2"], "--points must be 3 or more"),
        (["--level", "1", "--branch", "nope"], "unknown branch"),
        (["--level", "1", "--lr", "0.1"], "--lr is for a configuration"),
        ([], "give --level L"),
        (["--find-rewind", "--level", "1", "--candidates", "5000"], "no candidate rewind"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run, capsys, argv, needle):
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code = main(["stability", str(run), "--data-dir", str(TEST_DATA), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_without_a_run_folder_find_rewind_needs_a_configuration(tmp_path, capsys):
    assert main(["stability", "--level", "0"]) == 2
    assert "--find-rewind with a configuration and --out" in capsys.readouterr().err
    assert main(["stability", str(tmp_path / "missing"), "--level", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(LTHError) as exc:
        analyze_level(tmp_path / "missing", 0)
    assert_one_line(exc)


def test_find_rewind_on_a_configuration_is_one_command(tmp_path, capsys):
    real_data("mnist")
    out = tmp_path / "cfg"
    argv = ["stability", "--find-rewind", "--out", str(out), "--preset", "quick",
            "--iterations", "100", "--val-size", "1000", "--candidates", "0,50", "--points", "3",
            "--data-dir", str(TEST_DATA), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "k = 0: test instability" in printed and "k = 50: test instability" in printed
    assert "earliest stable k: " in printed or "no candidate k is stable" in printed
    assert read_config(out).iterations == 100  # the folder is the configuration's run folder
    summary = read_table(out / "stability" / "summary.csv", STABILITY_SUMMARY)
    assert [(r["analysis"], r["level"], r["k"]) for r in summary] == [
        ("rewind", 0, 0), ("rewind", 0, 50)
    ]  # fmt: skip


def test_the_stability_files_are_lths_and_nothing_else(run, level1):
    from lth.runfolder.ownership import lth_files

    (run / "stability" / "mine.txt").write_text("the user's own notes")
    files = lth_files(run, ["stability"])
    assert "stability/summary.csv" in files and "stability/ticket_r0_level_01.csv" in files
    assert "stability/ticket_r0_level_01/copy_2_k0.safetensors" in files
    assert "stability/mine.txt" not in files  # --overwrite would leave it alone
    (run / "stability" / "mine.txt").unlink()
