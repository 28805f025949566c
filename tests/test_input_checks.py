"""Issue 25, items 4-6: lth replaces no file it did not write (export, report, plot), checks
everything it can before a run folder is made, and bounds what a setting can make it allocate.

Every run here is tiny (one level of 100 iterations on real MNIST); a refused command must
leave the disk exactly as it was.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import TEST_DATA, assert_one_line, real_data
from lth.cli import main
from lth.config import ExperimentConfig
from lth.errors import LTHError
from lth.study.runner import run_experiment

TINY = ["--levels", "0", "--iterations", "100", "--eval-every", "100", "--val-size", "1000"]
CONFIG = ExperimentConfig(levels=1, iterations=100, eval_every=100, val_size=1000, controls=[])


@pytest.fixture(scope="module", autouse=True)
def _real_data():
    """Every test here reads the real MNIST files: fail (never skip) when they are missing."""
    real_data("mnist")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One real tiny run folder (one level, no controls), shared by the tests that read it."""
    path = tmp_path_factory.mktemp("input") / "run"
    run_experiment(CONFIG, out=path, data_dir=TEST_DATA, quiet=True, device="cpu")
    return path


def tree(root: Path) -> dict[str, bytes | None]:
    """Everything under ``root``: files with their bytes, folders as None."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def one_line_error(capsys, *needles: str) -> str:
    """The command's stderr: one ``lth: error:`` line naming every needle."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lth: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ---------------------------------------------------------------------- nothing clobbered


def test_export_keeps_a_users_file_and_replaces_its_own(run, tmp_path, capsys):
    from lth.runfolder.export import export_ticket, read_metadata

    user = tmp_path / "user.txt"
    user.write_text("my notes\n")
    export = ["export", str(run), "--level", "1", "--format", "dense", "--out"]
    assert main([*export, str(user)]) == 2
    one_line_error(capsys, f"--out {user} exists", "--force", "new path")
    assert user.read_text() == "my notes\n"
    with pytest.raises(LTHError, match="pass --force"):
        export_ticket(run, 1, out=user)
    assert user.read_text() == "my notes\n"
    ours = tmp_path / "ticket.safetensors"
    assert main([*export, str(ours)]) == 0
    assert main([*export, str(ours), "--format", "sparse"]) == 0  # its own file: replaced
    assert read_metadata(ours)["lth_format"] == "sparse"
    assert main([*export, str(user), "--force"]) == 0
    assert read_metadata(user)["lth_format"] == "dense"


@pytest.mark.parametrize("fmt", ["md", "latex", "csv", "table"])
def test_report_keeps_a_users_file_and_replaces_its_own(fmt, run, tmp_path, capsys):
    from lth.analysis.report import save_report

    user = tmp_path / f"user.{fmt}"
    user.write_text("my own report\n")
    report = ["report", str(run), "--format", fmt, "--output"]
    assert main([*report, str(user)]) == 2
    one_line_error(capsys, f"--output {user} exists", "--force")
    with pytest.raises(LTHError, match="pass --force"):
        save_report(run, user, fmt)
    assert user.read_text() == "my own report\n"
    ours = tmp_path / f"ours.{fmt}"
    assert main([*report, str(ours)]) == 0
    written = ours.read_bytes()
    assert main([*report, str(ours)]) == 0  # the same command on its own output
    assert ours.read_bytes() == written
    assert main([*report, str(user), "--force"]) == 0
    assert user.read_bytes() == written


def test_report_replaces_its_own_markdown_and_latex_after_the_run_changed(run, tmp_path):
    from lth.analysis.report import SIGNATURES, report, save_report

    for fmt in ("md", "latex"):
        ours = tmp_path / f"r.{fmt}"
        save_report(run, ours, fmt)
        assert ours.read_text() == f"{SIGNATURES[fmt]}\n{report(run, fmt)}"
        ours.write_text(ours.read_text() + "an older table\n")  # still signed: lth's file
        save_report(run, ours, fmt)
        assert ours.read_text() == f"{SIGNATURES[fmt]}\n{report(run, fmt)}"


def test_plot_keeps_a_users_figure_and_replaces_its_own(run, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from lth.analysis.figure_style import is_lth_figure

    out = tmp_path / "pl"
    out.mkdir()
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    fig.savefig(out / "curves.png")  # the user's own matplotlib figure
    before = tree(tmp_path)
    assert main(["plot", str(run), "--out", str(out)]) == 2
    one_line_error(capsys, f"{out / 'curves.png'} exists", "--force")
    assert tree(tmp_path) == before  # no figure written, none replaced
    mine = tmp_path / "mine"
    assert main(["plot", str(run), "--out", str(mine), "--formats", "png,pdf,svg"]) == 0
    drawn = sorted(p.name for p in mine.iterdir())
    assert drawn and all(is_lth_figure(mine / name) for name in drawn)
    assert main(["plot", str(run), "--out", str(mine), "--formats", "png,pdf,svg"]) == 0
    assert sorted(p.name for p in mine.iterdir()) == drawn
    assert not is_lth_figure(out / "curves.png")
    assert main(["plot", str(run), "--out", str(out), "--force"]) == 0
    assert is_lth_figure(out / "curves.png")
    assert main(["plot", str(run)]) == 0  # the run's own plots/: lth's figures, replaced
    assert all(is_lth_figure(p) for p in (run / "plots").iterdir())


@pytest.mark.parametrize("inside", [".lth", "ticket", "ticket/0/level_01", "."])
def test_plot_refuses_the_run_folders_own_folders(inside, run, capsys):
    before = tree(run)
    assert main(["plot", str(run), "--out", str(run / inside)]) == 2
    one_line_error(capsys, "that lth writes", "choose a path outside")
    assert tree(run) == before


# -------------------------------------------------------------- every check before the folder


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BEFORE_THE_FOLDER = [
    (["--batch-size", "60000"], "batch size 60000 exceeds the 59000 training examples"),
    (["--batch-size", "1000000000"], "batch size 1000000000 exceeds the 59000"),
    (["--val-size", "59990"], "batch size 60 exceeds the 10 training examples"),
]


@pytest.mark.parametrize(
    "bad, message", BEFORE_THE_FOLDER, ids=[" ".join(b) for b, _ in BEFORE_THE_FOLDER]
)
def test_a_bad_run_leaves_no_folder_and_the_corrected_one_runs(
    bad, message, tmp_path, capsys, monkeypatch, no_figures
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["run", *TINY, "--data-dir", str(TEST_DATA), "--quiet", "--out", str(out)]
    assert main(argv + bad) == 2
    one_line_error(capsys, message)
    assert tree(tmp_path) == {}
    assert main(argv) == 0
    assert (out / "summary.csv").is_file()


def test_an_unreachable_ray_address_leaves_no_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    address = f"127.0.0.1:{_closed_port()}"
    argv = ["run", *TINY, "--data-dir", str(TEST_DATA), "--quiet", "--out", str(tmp_path / "r")]
    assert main([*argv, "--executor", "ray", "--ray-address", address]) == 2
    one_line_error(capsys, f"cannot reach the Ray cluster at --ray-address {address}")
    assert tree(tmp_path) == {}


def test_find_rewind_on_a_bad_configuration_leaves_no_folder(tmp_path, capsys):
    argv = ["stability", "--find-rewind", *TINY, "--data-dir", str(TEST_DATA), "--quiet"]
    assert main([*argv, "--batch-size", "60000", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "batch size 60000 exceeds")
    assert main([*argv, "--copies", "1000000", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "over lth's cap of 100,000")
    assert tree(tmp_path) == {}


# ------------------------------------------------------------------------ bounded resources


@pytest.mark.parametrize(
    "counts, estimate",
    [
        (["--copies", "1000000"], "499,999,500,000 pairs x 30"),
        (["--points", "1000000000"], "1,000,000,000 points (1 pairs x 1000000000)"),
        (["--copies", "300", "--points", "3"], "134,550 points (44,850 pairs x 3)"),
    ],
)
def test_stability_counts_are_capped_before_anything_is_written(counts, estimate, run, capsys):
    before = tree(run)
    assert main(["stability", str(run), "--level", "1", "--quiet", *counts]) == 2
    one_line_error(capsys, estimate, "over lth's cap of 100,000; use fewer copies or points")
    assert tree(run) == before


def test_copies_that_do_not_fit_in_memory_are_refused(run):
    from lth.data import load_dataset
    from lth.stability.measure import check_memory
    from lth.study.experiment import Experiment

    data = load_dataset("mnist", TEST_DATA, val_size=1000)
    experiment = Experiment(CONFIG, data, "cpu")
    weights = 4 * sum(p.numel() for p in experiment.template.parameters())
    need = 100 * (experiment.ticket_bytes() + weights)  # 100 copies trained together
    with pytest.raises(LTHError) as e:
        check_memory(experiment, 100, free=need - 1)
    assert_one_line(e, "--copies 100 (100 trained together) need about "
                    f"{need / 2**30:.1f} GiB of memory on cpu", "use fewer copies")  # fmt: skip
    check_memory(experiment, 100, free=need)


def _sweep_file(tmp_path: Path, vary: dict[str, list]) -> Path:
    lines = ["levels = 0", "iterations = 100", "eval_every = 100", "val_size = 1000", "[vary]"]
    lines += [f"{key} = {values!r}" for key, values in vary.items()]
    path = tmp_path / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_huge_sweep_is_counted_and_refused_at_once(tmp_path, capsys):
    values = [round(0.01 * i, 2) for i in range(1, 41)]
    vary = {k: values for k in ("rate", "output_rate", "conv_rate")}
    vary |= {k: list(range(1, 41)) for k in ("seed", "replicates", "batch_size", "eval_every")}
    path = _sweep_file(tmp_path, vary)  # 40 ** 7 = 163,840,000,000 runs
    before = tree(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--data-dir", str(TEST_DATA)]) == 2
    one_line_error(capsys, "makes 163,840,000,000 runs (40 x 40 x 40 x 40 x 40 x 40 x 40)",
                   "more than the cap of 10,000", "--max-runs 163840000000")  # fmt: skip
    assert tree(tmp_path) == before


def test_max_runs_lowers_and_raises_the_cap(tmp_path, capsys):
    from lth.study.sweep import read_sweep

    path = _sweep_file(tmp_path, {"seed": [0, 1, 2]})
    out = ["--out", str(tmp_path / "out"), "--data-dir", str(TEST_DATA), "--quiet"]
    assert main(["sweep", str(path), *out, "--max-runs", "2"]) == 2
    one_line_error(capsys, "makes 3 runs (3), more than the cap of 2", "--max-runs 3")
    assert main(["sweep", str(path), *out, "--max-runs", "0"]) == 2
    one_line_error(capsys, "--max-runs must be 1 or more")
    assert len(read_sweep(path, max_runs=3)) == 3
    assert not (tmp_path / "out").exists()


def test_a_sweep_whose_data_and_models_do_not_fit_is_refused(tmp_path):
    import torch

    from lth.data import load_dataset
    from lth.study.experiment import Experiment
    from lth.study.sweep import check_memory, read_sweep

    studies = read_sweep(_sweep_file(tmp_path, {"seed": [0, 1, 2], "rate": [0.2, 0.4]}))
    data = load_dataset("mnist", TEST_DATA, val_size=1000, seed=0)
    first = Experiment(studies[0][1], data, "cpu")
    data_bytes = sum(t.nbytes for t in vars(data).values() if isinstance(t, torch.Tensor))
    model_bytes = sum(t.nbytes for t in first.template.state_dict().values())
    more = 2 * data_bytes + 5 * model_bytes  # two more data splits (seeds), five more models
    with pytest.raises(LTHError) as e:
        check_memory(studies, first, free=more - 1)
    needle = f"need about {more / 2**30:.1f} GiB of memory on cpu"
    assert_one_line(e, "the sweep's 6 runs (3 data splits", needle, "vary fewer seeds")
    check_memory(studies, first, free=more)


def test_a_large_sweep_shows_progress_while_it_is_checked(tmp_path, capsys):
    # 120 runs, checked one by one; the second's batch size is too large for the data
    rates = [round(0.01 * i, 2) for i in range(1, 61)]
    path = _sweep_file(tmp_path, {"rate": rates, "batch_size": [60, 60000]})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--data-dir", str(TEST_DATA)]) == 2
    err = capsys.readouterr().err
    assert "reading the sweep" in err and "checking the runs" in err
    assert err.splitlines()[-1].endswith(
        "batch size 60000 exceeds the 59000 training examples; "
        "use --batch-size 59000 or less (or a smaller --val-size)"
    )
    assert not out.exists()
