"""Sweeps (issue 16): a TOML file of base settings and values to vary, a run folder each."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import assert_one_line, real_data
from lth.cli import main
from lth.errors import LTHError
from lth.runfolder.runs import read_config
from lth.study.sweep import read_sweep, run_name

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

SWEEP = """\
levels = 1
iterations = 20
eval_every = 10
batch_size = 60
val_size = 500
controls = ["reinit"]

[vary]
rate = [0.2, 0.5]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_every_combination_is_a_study_named_by_its_values(tmp_path):
    path = write(
        tmp_path,
        'preset = "conv2_cifar10_paper"\nlevels = 2\n[vary]\nrate = [0.2, 0.4]\nseed = [0, 1, 2]\n'
        'controls = [["reinit"], ["reinit", "random_prune"]]\n',
    )
    studies = read_sweep(path)
    assert len(studies) == 2 * 3 * 2
    name, config = studies[1]  # the last key varies fastest, as in itertools.product
    assert name == "rate-0.2_seed-0_controls-reinit+random_prune"
    assert (config.rate, config.seed, config.controls) == (0.2, 0, ("reinit", "random_prune"))
    assert config.model == "conv2" and config.levels == 2, "the preset, then the base settings"
    assert len({n for n, _ in studies}) == len(studies)
    assert run_name({"model": "pkg.mod:make net"}) == "model-pkg.mod-make-net"


@pytest.mark.parametrize(
    "text, needles",
    [
        ("levels = 2\n", ["no [vary] table"]),
        ("[vary]\nrates = [0.2]\n", ["unknown setting 'rates'", "rate"]),
        ("[vary]\nrate = 0.2\n", ["rate must be a non-empty list", "rate = [0.2, ...]"]),
        ("[vary]\nrate = []\n", ["rate must be a non-empty list"]),
        ("[vary]\nseed = [1, 1]\n", ["seed lists a value twice"]),
        ("[vary]\nrate = [0.2, 1.5]\n", ["run rate-1.5", "rate"]),
        ("leveles = 2\n[vary]\nrate = [0.2]\n", ["unknown setting 'leveles'"]),
        ('[vary]\nmodel = ["a b", "a-b"]\n', ["share the run folder model-a-b"]),
        ('preset = "nope"\n[vary]\nrate = [0.2]\n', ["unknown preset 'nope'"]),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tmp_path, text, needles):
    with pytest.raises(LTHError) as exc:
        read_sweep(write(tmp_path, text))
    assert_one_line(exc, *needles)


def test_sweep_runs_each_study_and_resumes_them(tmp_path, one_thread, capsys):
    """lth sweep runs every study into its folder; report and plot read the sweep folder;
    the same command again resumes (here: finds) every run and changes nothing."""
    path = write(tmp_path, SWEEP)
    out = tmp_path / "sweep"
    argv = ["sweep", str(path), "--out", str(out), "--data-dir", str(real_data()), "--quiet"]
    assert main([*argv, "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["rate-0.2", "rate-0.5"]
    for name, rate in (("rate-0.2", 0.2), ("rate-0.5", 0.5)):
        config = read_config(out / name)
        assert (config.rate, config.levels, config.controls) == (rate, 1, ("reinit",))
        assert (out / name / "ticket" / "0" / "level_01" / "final.safetensors").is_file()
    first = {p: p.read_bytes() for p in out.rglob("*.safetensors")}
    assert "2 runs in" in capsys.readouterr().out

    assert main([*argv, "--threads", "1"]) == 0
    assert "finished earlier" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*.safetensors")} == first

    assert main(["report", str(out), "--format", "csv"]) == 0
    table = capsys.readouterr().out
    assert "0.2" in table and "0.5" in table, table


def test_sweep_with_model_code_needs_trust_code(tmp_path, capsys):
    path = write(tmp_path, '[vary]\nmodel = ["pkg.mod:make"]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "s")]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
