"""End-to-end tests of the ``lth`` command on real MNIST: run folder, resume after SIGKILL,
bad input, report and plot.

Runs are tiny (2 levels x 200 iterations); ``lth run`` is called in-process through
``lth.cli.main`` except where a process must be killed.
"""

import csv
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TEST_DATA, TINY_RUN, real_data
from held_run import AT, HOLD, NO_FIGURES, wait_for
from lth.cli import build_parser, main, resolve_config
from lth.errors import LTHError
from lth.presets import PRESETS
from lth.runfolder.runs import load_tensors, load_ticket, read_config

DATA = TEST_DATA
TINY = ["--levels", "2", "--iterations", "200", "--eval-every", "100", "--val-size", "1000"]
BRANCHES = ("ticket", "reinit", "random_prune")
METRICS = "branch,replicate,level,iteration,weights_remaining,train_loss,val_loss,val_acc,test_acc"
SUMMARY = (
    "branch,replicate,level,weights_remaining,test_acc,early_stop_iteration,"
    "test_acc_at_early_stop,best_val_acc"
)


@pytest.fixture(scope="module", autouse=True)
def _real_data():
    """Every test here runs lth on the real MNIST files: fail (never skip) when they are missing."""
    real_data("mnist")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


def lth_run(out, *extra, quiet=True):
    argv = ["run", *TINY, "--data-dir", str(DATA), "--out", str(out), *extra]
    return main(argv + (["--quiet"] if quiet else []))


def results(root: Path) -> dict[str, bytes]:
    """Bytes of every csv, safetensors and config file of a run folder (plots, internal state
    and the marker, which holds the folder's own id, excluded)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in (".lth", "plots", ".lth-run")
    }


def tree(root: Path) -> dict[str, bytes | None]:
    """Everything under ``root``: files with their bytes, folders as None."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """One real tiny run (conftest: made once per session), shared by the tests that only read
    it."""
    assert TINY == TINY_RUN
    return tiny_run


# ------------------------------------------------------------------------- the run folder


def test_run_folder_is_complete_and_consistent(tiny):
    config = read_config(tiny)
    assert (config.levels, config.iterations, config.val_size) == (2, 200, 1000)
    assert config.controls == ("reinit", "random_prune") and config.reset == "rewind"
    env = (tiny / "config.toml").read_text().split("[environment]")[1]
    for key in ("device", "data_dir", "torch", "lth"):
        assert f"\n{key} = " in env

    metrics = (tiny / "metrics.csv").read_text().splitlines()
    assert metrics[0] == METRICS
    # (the ticket at level 0, 3 branches x levels 1-2) x evaluations (0, 100, 200)
    assert len(metrics) == 1 + (1 + 3 * 2) * 3
    summary = read_rows(tiny / "summary.csv")
    assert (tiny / "summary.csv").read_text().startswith(SUMMARY + ",")
    assert [(r["branch"], int(r["level"])) for r in summary] == [("ticket", 0)] + [
        (b, level) for level in (1, 2) for b in BRANCHES
    ]  # level 0: the dense network, once
    layers = read_rows(tiny / "layers.csv")
    for name in ("accuracy_vs_weights", "curves", "early_stop", "layer_remaining"):
        assert (tiny / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert not (tiny / "plots" / f"{name}.pdf").exists()  # PDF only on request

    theta0 = load_tensors(tiny / "ticket/0/level_00/init.safetensors")
    previous = None
    for row in summary:
        folder = tiny / row["branch"] / "0" / f"level_{int(row['level']):02d}"
        masks = load_tensors(folder / "mask.safetensors")
        init = load_tensors(folder / "init.safetensors")
        final = load_tensors(folder / "final.safetensors")
        assert all(m.dtype == torch.bool for m in masks.values())
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert float(row["weights_remaining"]) == pytest.approx(100 * kept / total, abs=1e-9)
        for name, m in masks.items():
            assert torch.all(final[name][~m] == 0) and torch.all(init[name][~m] == 0)
            layer = next(
                r for r in layers
                if (r["branch"], r["level"], r["layer"]) == (row["branch"], row["level"], name)
            )  # fmt: skip
            assert int(layer["kept"]) == int(m.sum()) and int(layer["total"]) == m.numel()
            if row["branch"] != "reinit":  # rewind: survivors start from θ0
                assert torch.equal(init[name][m], theta0[name][m])
        if row["branch"] == "ticket":
            if previous is not None:  # masks only shrink
                assert all(torch.all(masks[n] <= previous[n]) for n in masks)
            previous, ticket_masks = masks, masks
        elif row["branch"] == "reinit":  # the ticket's own mask, other weights
            assert all(torch.equal(masks[n], ticket_masks[n]) for n in masks)
            assert not torch.equal(init["fc1.weight"], theta0["fc1.weight"])
        else:  # same per-layer counts, another mask
            assert all(int(masks[n].sum()) == int(ticket_masks[n].sum()) for n in masks)
    assert float(summary[-1]["weights_remaining"]) < 70


def test_load_ticket_from_a_cli_run(tiny):
    from lth.data import load_dataset

    model, masks = load_ticket(tiny, level=2)
    data = load_dataset("mnist", DATA, val_size=1000)
    with torch.no_grad():
        acc = (model(data.test_x).argmax(1) == data.test_y).double().mean().item() * 100
    row = next(r for r in read_rows(tiny / "summary.csv") if r["level"] == "2")
    assert acc == pytest.approx(float(row["test_acc"]), abs=0.05)
    assert all(torch.all(p[~masks[n]] == 0) for n, p in model.named_parameters() if n in masks)


def test_config_roundtrip_progress_output_and_determinism(tiny, tmp_path, capsys, no_figures):
    args = build_parser().parse_args(["run", "--config", str(tiny / "config.toml")])
    assert resolve_config(args) == read_config(tiny)
    out = tmp_path / "again"
    argv = ["run", "--config", str(tiny / "config.toml"), "--data-dir", str(DATA)]
    assert main([*argv, "--out", str(out)]) == 0  # with progress bars this time
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"run folder: {out}"
    assert [line.split(":")[0] for line in lines[1:4]] == ["level 0/2", "level 1/2", "level 2/2"]
    assert "64.1% weights remaining" in lines[3] and "random_prune" in lines[3]
    assert lines[-1].startswith("done in ") and str(out) in lines[-1]
    assert "val acc" in captured.err and "remaining" in captured.err  # tqdm bars on stderr
    assert results(out) == results(tiny)  # bit-identical: csv, safetensors, config.toml


def test_rerun_of_a_finished_run_trains_nothing(tiny, tmp_path, capsys, no_figures):
    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    before = results(out)
    assert lth_run(out) == 0
    assert "(finished earlier)" in capsys.readouterr().out
    assert results(out) == before


def test_replicates_and_no_controls(tmp_path, capsys, no_figures):
    out = tmp_path / "run"
    argv = ["--replicates", "2", "--controls", "none", "--levels", "1", "--iterations", "100"]
    assert lth_run(out, *argv) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = read_rows(out / "summary.csv")
    assert {(r["branch"], r["replicate"], r["level"]) for r in summary} == {
        ("ticket", rep, level) for rep in "01" for level in "01"
    }
    mean = sum(float(r["test_acc"]) for r in summary if r["level"] == "1") / 2
    assert lines[2] == (
        f"level 1/1: 80.0% weights remaining, test acc (mean of 2 replicates) ticket {mean:.2f}%"
    )
    assert not (out / "reinit").exists() and (out / "ticket" / "1" / "level_01").is_dir()
    theta = [load_tensors(out / "ticket" / r / "level_00" / "init.safetensors") for r in "01"]
    assert not torch.equal(theta[0]["fc1.weight"], theta[1]["fc1.weight"])


# ----------------------------------------------------------------- resume after SIGKILL


def test_sigkill_at_several_points_then_resume_is_bit_identical(tiny, tmp_path):
    """Each run waits at its kill point (tests/held_run.py) until the test has killed it: the
    points are hit on a machine of any speed."""
    out = tmp_path / "killed"
    argv = ["run", *TINY, "--data-dir", str(DATA), "--out", str(out), "--quiet"]
    cmd = [sys.executable, str(Path(__file__).parent / "held_run.py"), *argv]
    cmd += ["--checkpoint-every", "0"]
    internal = out / ".lth"
    kill_points = [  # the second checkpoint of a level is written at its iteration 100
        ("inside level 0", "checkpoint:0:100"),
        ("between levels 0 and 1", "level:0"),
        ("inside level 2", "checkpoint:2:100"),
    ]
    # one thread as in-process; no figures (results() leaves plots/ out)
    env = os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", NO_FIGURES: "1"}
    outputs = []
    for i, (_, point) in enumerate(kill_points):
        hold = tmp_path / f"hold{i}"
        hold.mkdir()
        held = env | {HOLD: str(hold), AT: point}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=held)
        wait_for(hold, proc)
        proc.send_signal(signal.SIGKILL)
        outputs.append(proc.communicate()[0].decode())
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    outputs.append(done.stdout)
    resumed = {
        "inside level 0": "level 0: continuing from the checkpoint at iteration 100",
        "between levels 0 and 1": "level 0/2: 100.0% weights remaining",
        "inside level 2": "level 2: continuing from the checkpoint at iteration 100",
    }
    for i, (name, _) in enumerate(kill_points):
        assert resumed[name] in outputs[i + 1], (name, outputs[i + 1])
    assert "(finished earlier)" in outputs[-1]
    assert not list(out.rglob(".*.tmp*")) and not list(internal.glob("*.pt"))
    assert results(out) == results(tiny)


# -------------------------------------------------------------------------------- bad input


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lth: error: "), err
    assert "Traceback" not in err
    return err


BAD_INPUT = [
    (["--model", "resnet9000"], "unknown model 'resnet9000'; choose one of conv2"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; use one of: mnist, fashion_mnist"),
    (["--preset", "huge"], "unknown preset 'huge'; choose one of default, quick"),
    (["--learning-rate", "0.1"], "unknown option '--learning-rate' for 'lth run'; valid options:"),
    (["--rate", "0"], "rate must be a fraction between 0 and 1, got 0.0"),
    (["--rate", "1.5"], "rate must be a fraction between 0 and 1, got 1.5"),
    (["--output-rate", "abc"], "argument --output-rate: expected a number, got 'abc'"),
    (["--levels", "-1"], "levels must be a whole number >= 0 and <= 10000, got -1"),
    (["--levels", "2.5"], "argument --levels: expected a whole number, got '2.5'"),
    (["--iterations", "0"], "iterations must be a whole number >= 1, got 0"),
    (["--iterations", "100", "--epochs", "1"], "--epochs: not allowed with argument --iterations"),
    (["--pruning", "random"], "argument --pruning: invalid choice: 'random'"),
    (["--controls", "reinit,shuffle"], "unknown control 'shuffle'"),
    (["--batch-size", "0"], "batch_size must be a whole number >= 1, got 0"),
    (["--val-size", "60000"], "val_size 60000 is out of range"),
    (["--exclude", "fc9.weight"], "cannot leave 'fc9.weight' unpruned"),
    (["--rewind-iteration", "500"], "rewind_iteration 500 is past the 200 training iterations"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--device", "toaster"], "invalid device 'toaster'"),
    (["--checkpoint-every", "-5"], "--checkpoint-every must be a number of seconds >= 0"),
    (["--threads", "-1"], "--threads must be 0 (PyTorch's default) or more"),
]
if not torch.cuda.is_available():
    BAD_INPUT.append((["--device", "cuda"], "cannot put the data on device cuda"))


@pytest.mark.parametrize("extra, message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_option_exits_2_with_one_line_and_creates_nothing(
    extra, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a default --out would land here
    out = tmp_path / "run"
    assert main(["run", *TINY, "--data-dir", str(DATA), "--quiet", *extra, "--out", str(out)]) == 2
    assert message in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_unknown_command_and_missing_command(capsys):
    assert main(["train"]) == 2
    assert "invalid choice: 'train'" in _one_line_error(capsys)
    assert main([]) == 2
    commands = "run, sweep, plot, report, verify, publish, export, stability"
    assert f"choose a command: {commands}" in _one_line_error(capsys)


def _config_file(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("levels = 2\nrate = [", "is not valid TOML"),
        ("levels = 2\nlearning_rate = 0.1\n", "unknown setting 'learning_rate'; valid settings:"),
        ('lr = "fast"\n', "lr must be a number, got 'fast'"),
        ("levels = 1.5\n", "levels must be a whole number, got 1.5"),
        ('controls = "reinit"\n', "controls must be a list of names"),
        ("[training]\nlr = 0.1\n", "unknown setting 'training'"),
    ],
)
def test_bad_config_file(text, message, tmp_path, capsys):
    config = _config_file(tmp_path, text)
    before = tree(tmp_path)
    assert main(["run", "--config", config, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert message in _one_line_error(capsys)
    assert tree(tmp_path) == before


def test_missing_config_file_and_data_dir(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["run", "--config", str(tmp_path / "nope.toml"), "--out", out]) == 2
    assert "config file" in _one_line_error(capsys)
    assert main(["run", *TINY, "--data-dir", str(tmp_path / "nodata"), "--out", out]) == 2
    assert "does not exist; pass --data-dir with an existing folder" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_data_file(tmp_path, capsys):
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    for f in (DATA / "mnist").iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    labels = data / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])  # truncated download
    before = tree(tmp_path)
    out = tmp_path / "run"
    assert main(["run", *TINY, "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "train-labels-idx1-ubyte.gz" in _one_line_error(capsys)
    assert tree(tmp_path) == before


def test_unwritable_out(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "run"):
        assert lth_run(out) == 2
        assert "is a file" in _one_line_error(capsys)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert lth_run(mine, "--overwrite") == 2
    assert "not an lth run folder" in _one_line_error(capsys)
    assert tree(tmp_path) == {"a_file": b"x", "mine": None, "mine/notes.txt": b"keep"}


def test_other_settings_on_an_existing_run(tiny, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    before = tree(out)
    assert lth_run(out, "--levels", "3", "--lr", "0.01") == 2
    err = _one_line_error(capsys)
    assert "holds a run with other settings: levels (2 -> 3), lr (0.0012 -> 0.01)" in err
    assert "--overwrite" in err
    assert tree(out) == before


def test_lock_held_by_another_process(tiny, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    before = tree(out)
    with open(out / ".lth" / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lth_run(out) == 2
        assert "another lth process is using" in _one_line_error(capsys)
    assert tree(out) == before


# ---------------------------------------------------------------------- run-time failures


def test_disk_full_exits_1_with_one_line_and_no_torn_files(tmp_path, capsys, monkeypatch):
    calls = []

    def fsync(fd):
        calls.append(fd)
        # the new manifest, the marker, config.toml (named in the manifest before, recorded
        # after), level 0 named in the manifest, then level 0's files
        if len(calls) == 7:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "run"
    assert lth_run(out, "--levels", "0", "--iterations", "20", "--eval-every", "10") == 1
    err = _one_line_error(capsys)
    assert "cannot write " in err and ".safetensors: No space left on device" in err
    assert not list(out.rglob(".*.tmp*"))
    assert not (out / ".lth" / "progress.json").exists()


def test_interrupt_exits_130_with_resume_note(tmp_path, capsys, monkeypatch):
    def interrupt(self, level, group, trainer):
        raise KeyboardInterrupt

    monkeypatch.setattr("lth.progress.Progress.hook", interrupt)
    out = tmp_path / "run"
    assert lth_run(out, "--levels", "0", "--iterations", "20", "--eval-every", "10") == 130
    err = capsys.readouterr().err.strip()
    assert err == f"lth: interrupted; run the same command again to resume (--out {out})"


def test_diverging_ticket_stops_the_study(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--optimizer", "sgd", "--lr", "1000", "--iterations", "100", "--eval-every", "50"]
    assert lth_run(out, *argv) == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert (
        "lth: warning: training diverged (NaN or inf loss) for branch ticket, replicate 0, "
        "level 0 at iteration 50" in err[0]
    )
    assert "the ticket of replicate 0 diverged at level 0, so its chain" in err[-2]
    assert err[-1].startswith("lth: error: every ticket diverged (NaN or inf loss) by level 0")
    summary = read_rows(out / "summary.csv")
    # level 0 is the dense network alone: the controls never trained
    assert [(r["branch"], r["diverged_at"]) for r in summary] == [("ticket", "50")]


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["run", "--model", "nope", "--debug", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("lth: error: unknown")


# ---------------------------------------------------------------------- help, presets


def test_help_shows_every_option_with_defaults(capsys):
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for option in [
        "--model",
        "--dataset",
        "--data-dir",
        "--levels",
        "--rate",
        "--output-rate",
        "--pruning",
        "--reset",
        "--rewind-iteration",
        "--controls",
        "--iterations",
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--momentum",
        "--weight-decay",
        "--eval-every",
        "--val-size",
        "--seed",
        "--device",
        "--out",
        "--config",
        "--preset",
        "--quiet",
        "--overwrite",
        "--replicates",
        "--init",
        "--exclude",
        "--max-parallel",
        "--checkpoint-every",
        "--debug",
    ]:
        assert option in text
    assert "(default: lenet_300_100)" in text and "(default: 0.0012)" in text
    assert "lenet_300_100_paper" in text


def test_presets_are_valid_and_reproduce_the_paper():
    args = build_parser().parse_args(["run"])
    default = resolve_config(args)
    assert (default.model, default.dataset) == ("lenet_300_100", "mnist")
    for name in PRESETS:
        args = build_parser().parse_args(["run", "--preset", name, "--levels", "3"])
        assert resolve_config(args).levels == 3  # options override the preset
    paper = resolve_config(build_parser().parse_args(["run", "--preset", "lenet_300_100_paper"]))
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.iterations) == (
        "adam",
        1.2e-3,
        60,
        50_000,
    )
    assert (paper.rate, paper.output_rate, paper.pruning, paper.eval_every, paper.val_size) == (
        0.2, 0.1, "layerwise", 100, 5000  # the paper ranks each layer apart
    )  # fmt: skip
    remaining = 0.8**paper.levels * 265_200 + 0.9**paper.levels * 1000
    assert 1.0 < 100 * remaining / 266_200 < 3.6


def test_flags_override_config_file_which_overrides_preset(tmp_path):
    config = _config_file(tmp_path, "levels = 4\nlr = 0.01\nepochs = 2\n[environment]\nx = 1\n")
    args = build_parser().parse_args(
        ["run", "--preset", "quick", "--config", config, "--lr", "0.5"]
    )
    c = resolve_config(args)
    assert (c.levels, c.lr, c.epochs, c.iterations) == (4, 0.5, 2, PRESETS["quick"]["iterations"])
    args = build_parser().parse_args(["run", "--config", config, "--iterations", "7"])
    assert (resolve_config(args).epochs, resolve_config(args).iterations) == (0, 7)
    with pytest.raises(LTHError):
        resolve_config(build_parser().parse_args(["run", "--controls", "none", "--seed", "-1"]))
    assert resolve_config(build_parser().parse_args(["run", "--controls", "none"])).controls == ()


# ----------------------------------------------------------------------- report and plot


def test_report(tiny, tmp_path, capsys):
    assert main(["report", str(tiny), "--layers"]) == 0
    text = capsys.readouterr().out
    assert "fc1.weight" in text and "235200" in text and "random_prune" in text
    assert main(["report", str(tiny), "--format", "csv", "--output", str(tmp_path / "r.csv")]) == 0
    rows = read_rows(tmp_path / "r.csv")
    summary = read_rows(tiny / "summary.csv")
    for r in rows:
        s = next(x for x in summary if (x["branch"], x["level"]) == (r["branch"], r["level"]))
        assert float(r["test_acc_mean"]) == pytest.approx(float(s["test_acc"]))
    assert main(["report", str(tiny), "--format", "md", "--layers"]) == 0
    assert "| fc1.weight" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert main(["report", str(tiny), "--format", "xml"]) == 2
    assert "invalid choice: 'xml'" in _one_line_error(capsys)


def test_plot_overlays_runs(tiny, tmp_path, capsys):
    from lth.analysis import plots

    out = tmp_path / "figs"
    assert main(["plot", str(tiny), str(tiny), "--out", str(out), "--formats", "png"]) == 0
    printed = capsys.readouterr().out.split()
    names = {Path(p).name for p in printed}
    assert names >= {
        f"{n}.png" for n in ("accuracy_vs_weights", "curves", "early_stop", "layer_remaining")
    }
    assert all(Path(p).parent == out for p in printed)
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in printed)
    figure = plots.plot_runs([tiny], formats=())["accuracy_vs_weights"]
    ticket = next(line for line in figure.axes[0].get_lines() if line.get_gid() == "ticket")
    summary = [r for r in read_rows(tiny / "summary.csv") if r["branch"] == "ticket"]
    assert list(ticket.get_xdata()) == pytest.approx(
        [float(r["weights_remaining"]) for r in summary]
    )
    assert list(ticket.get_ydata()) == pytest.approx([float(r["test_acc"]) for r in summary])
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert main(["plot", str(tiny), "--out", str(out), "--formats", "png", "--band", "minmax"]) == 0
    assert main(["plot", str(tiny), "--band", "range"]) == 2
