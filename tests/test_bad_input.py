"""Bad input caught before anything is created; no code run that the user did not name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import assert_one_line, figures_off, real_data
from held_run import AT, HOLD, NO_FIGURES, wait_for
from lth.cli import main

TINY = ["--levels", "1", "--iterations", "20", "--eval-every", "10", "--val-size", "100"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("lth: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


MLP = """
    from torch import nn
    def mlp(input_shape, num_classes):
        hidden = nn.Linear(784, 20)
        return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(20, num_classes))
    def wrong(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
    def leaves():
        raise SystemExit(0)
"""


def test_a_config_file_cannot_run_code(tmp_path, capsys, monkeypatch):
    """model = "pkg.mod:func" in --config is imported only with --trust-code."""
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "ran.txt"
    write_module(tmp_path, "evil", f"open({str(canary)!r}, 'w').write('x')\ndef f(): pass\n")
    (tmp_path / "study.toml").write_text('model = "evil:f"\nlevels = 1\n')
    out = tmp_path / "run"
    assert main(["run", "--config", "study.toml", "--out", str(out), "--quiet"]) == 2
    assert "--trust-code" in error_line(capsys)
    assert not canary.exists() and not out.exists()
    for name in ("os:abort", "sys:exit"):
        (tmp_path / "s.toml").write_text(f'model = "{name}"\n')
        assert main(["run", "--config", "s.toml", "--out", str(out), "--quiet"]) == 2
        assert "--trust-code" in error_line(capsys)


def test_a_factory_that_exits_or_has_the_wrong_output_is_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a module in the current folder is found, as python -m finds it
    write_module(tmp_path, "nets_exit", MLP)
    data = str(real_data())
    out = tmp_path / "run"
    common = [*TINY, "--data-dir", data, "--out", str(out), "--quiet"]
    assert main(["run", "--model", "nets_exit:leaves", *common]) == 2
    assert "model factory nets_exit:leaves failed: SystemExit" in error_line(capsys)
    assert main(["run", "--model", "nets_exit:wrong", *common]) == 2
    assert "it must be (2, 10)" in error_line(capsys)
    assert not out.exists()  # checked before the run folder is made
    assert main(["run", "--model", "nets_missing:mlp", *common]) == 2
    assert "PYTHONPATH" in error_line(capsys)
    write_module(tmp_path, "nets_broken", "def mlp(:\n")
    assert main(["run", "--model", "nets_broken:mlp", *common]) == 2
    assert "SyntaxError" in error_line(capsys)
    assert not out.exists()


def test_the_lth_command_finds_a_module_in_the_current_folder(tmp_path):
    write_module(tmp_path, "nets_here", MLP)
    env = dict(os.environ, PYTHONPATH="")
    # the run draws no figures (as conftest's no_figures: the test reads summary.csv only)
    code = ("import sys; from lth.analysis import plots; plots.plot_runs = lambda *a, **k: {}; "
            "from lth.cli import main; sys.exit(main())")  # fmt: skip
    cmd = [sys.executable, "-c", code]
    argv = ["run", "--model", "nets_here:mlp", *TINY, "--data-dir", str(real_data()), "--quiet"]
    done = subprocess.run(
        [*cmd, *argv, "--out", "run", "--threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "summary.csv").is_file()


def test_levels_past_an_empty_or_unchanging_network_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    data = str(real_data())
    assert main(["run", "--levels", "10000", "--data-dir", data, "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "would prune nothing" in line and "--levels" in line
    assert (
        main(["run", "--levels", "30", "--rate", "0.9", "--data-dir", data, "--out", str(out)]) == 2
    )
    assert "with no weight" in error_line(capsys)
    assert not out.exists()


def test_a_layer_that_stops_shrinking_is_a_warning(tmp_path, capsys, no_figures):
    out = tmp_path / "run"
    argv = ["run", "--levels", "4", "--rate", "0.2", "--output-rate", "0.0004",
            "--iterations", "20", "--eval-every", "10", "--val-size", "100",
            "--data-dir", str(real_data()), "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: from level 1 on, layer fc3.weight keeps 1000 weights" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--device", "meta"], "invalid device 'meta'"),
        (["report", "__file__"], "is a file, not a run folder"),
        (["plot", "__file__"], "is a file, not a run folder"),
    ],
)
def test_one_line_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "__file__").write_text("x")
    argv = [*argv, "--out", str(tmp_path / "run")] if argv[0] == "run" else argv
    assert main(argv) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_tilde_in_out_is_the_home_folder(tmp_path, monkeypatch, no_figures):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["run", *TINY, "--levels", "0", "--data-dir", str(real_data()), "--quiet"]
    assert main([*argv, "--out", "~/r"]) == 0
    assert (tmp_path / "home" / "r" / "summary.csv").is_file()
    assert not (tmp_path / "~").exists()


def held_run(out: Path) -> list[str]:
    """`lth run` of the signal test (through tests/held_run.py) into ``out``."""
    argv = ["run", "--levels", "1", "--iterations", "200", "--eval-every", "100",
            "--val-size", "500", "--data-dir", str(real_data()), "--quiet",
            "--checkpoint-every", "3600", "--threads", "1", "--out", str(out)]  # fmt: skip
    return [sys.executable, str(Path(__file__).parent / "held_run.py"), *argv]


def one_thread_env() -> dict[str, str]:
    """The test session's environment (conftest's kernel settings included), on one thread; the
    runs draw no figures (the test compares tables and weights)."""
    return os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", NO_FIGURES: "1"}


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The signal test's run, never interrupted (shared by SIGTERM and SIGINT), in this process
    (one process fewer to start; same config and seed, same results on one thread)."""
    out = tmp_path_factory.mktemp("whole") / "run"
    with figures_off():
        assert main(held_run(out)[2:]) == 0
    return out


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_the_resumed_run_is_identical(sig, whole, tmp_path):
    """The run waits at its evaluation of iteration 100 of level 0 (tests/held_run.py) while
    the signal comes: it stops right there, on a machine of any speed."""
    import signal

    out, hold = tmp_path / "stopped", tmp_path / "hold"
    hold.mkdir()
    held = one_thread_env() | {HOLD: str(hold), AT: "checkpoint:0:100"}
    proc = subprocess.Popen(held_run(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=held)  # fmt: skip
    wait_for(hold, proc)
    proc.send_signal(getattr(signal, sig))
    (hold / "release").touch()
    _, err = proc.communicate(timeout=240)
    err = err.decode()
    assert f"lth: interrupted by {sig}; checkpoint saved at level 0, iteration 100" in err, err
    assert proc.returncode == (143 if sig == "SIGTERM" else 130)
    assert list((out / ".lth").glob("level_00_group_*.pt"))  # the checkpoint of the signal
    resumed = subprocess.run(held_run(out), capture_output=True, text=True, env=one_thread_env(),
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing from the checkpoint at iteration 100" in resumed.stdout
    for name in ("summary.csv", "metrics.csv", "ticket/0/level_01/final.safetensors"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def test_a_damaged_checkpoint_is_one_short_line(tmp_path):
    from lth.config import ExperimentConfig
    from lth.errors import LTHError
    from lth.runfolder.runs import RunFolder

    config = ExperimentConfig(levels=1, iterations=20, eval_every=10, val_size=100)
    with RunFolder(tmp_path / "run", config) as folder:
        path = tmp_path / "run" / ".lth" / "level_00_group_00.pt"
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 5000)  # a damaged zip: torch's long error
        with pytest.raises(LTHError) as exc:
            folder.load_checkpoint(0, 0)
    msg = assert_one_line(exc, "damaged", "redo level 0")
    assert len(msg) < 250, msg


def test_report_on_an_unreadable_folder_is_bad_input(tmp_path, capsys, no_figures):
    out = tmp_path / "run"
    argv = ["run", *TINY, "--data-dir", str(real_data()), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    (out / "summary.csv").unlink()
    (out / "summary.csv").mkdir()  # a folder where a file should be: an OSError on reading
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "resume" not in err and err.count("\n") == 1, err
