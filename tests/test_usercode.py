"""One gate for user code (lth.usercode): a ``package.module:function`` named in a file (a
``--config``, a sweep file, a run folder's config.toml) is imported only with --trust-code
(``trust_code=True``), in every command and Python entry point; code named on the command line
or in the Python call is imported. Marker modules prove it: importing one writes a file."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

from conftest import TEST_DATA, assert_one_line, figures_off, real_data
from lth.cli import main
from lth.config import ExperimentConfig
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.runfolder.export import load_export
from lth.runfolder.runs import load_ticket

MODEL = "gate_model:mlp"
CRITERION = "gate_crit:by_size"
MODULES = {
    "gate_model": """
        from torch import nn

        def mlp(input_shape, num_classes):
            c, h, w = input_shape
            return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(),
                                 nn.Linear(16, num_classes))
    """,
    "gate_crit": """
        def by_size(weights, masks):
            return {n: weights[n].abs() for n in masks}
    """,
}
MARKER = "from pathlib import Path\nPath(__file__).with_suffix('.imported').write_text('x')\n"
TINY = ["--levels", "1", "--iterations", "40", "--eval-every", "20", "--val-size", "300",
        "--controls", "none", "--quiet", "--data-dir", str(TEST_DATA)]  # fmt: skip
SETTINGS = "levels = 1\niterations = 40\neval_every = 20\nval_size = 300\ncontrols = []\n"
REFUSED = "lth imports code only when it is named on the command line"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> Path:
    """A folder holding the marker modules: each writes <name>.imported when imported."""
    real_data("mnist")
    folder = tmp_path_factory.mktemp("code")
    for name, body in MODULES.items():
        lines = [line[8:] for line in body.splitlines()]
        (folder / f"{name}.py").write_text(MARKER + "\n".join(lines) + "\n")
    return folder


def forget(code_dir: Path) -> None:
    """Unimport the marker modules and delete their markers: the next import writes one."""
    for name in MODULES:
        sys.modules.pop(name, None)
        (code_dir / f"{name}.imported").unlink(missing_ok=True)


def imported(code_dir: Path) -> set[str]:
    """The marker modules imported since :func:`forget`."""
    return {name for name in MODULES if (code_dir / f"{name}.imported").exists()}


@pytest.fixture(autouse=True)
def fresh(code_dir, monkeypatch):
    """Each test starts in the modules' folder (importable) with nothing imported."""
    monkeypatch.chdir(code_dir)
    monkeypatch.syspath_prepend(str(code_dir))
    forget(code_dir)
    yield
    forget(code_dir)


def refused(capsys, what: str, spec: str) -> None:
    """The command's one line: the run's message, naming the code and --trust-code."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("lth: error: "), err
    assert f"names {what} code {spec!r}" in err and REFUSED in err and "--trust-code" in err, err


@pytest.fixture(scope="module")
def code_run(code_dir, tmp_path_factory) -> Path:
    """A tiny run whose model and criterion are code named on the command line."""
    out = tmp_path_factory.mktemp("runs") / "code"
    with pytest.MonkeyPatch.context() as mp, figures_off():  # the tests draw them themselves
        mp.syspath_prepend(str(code_dir))
        argv = ["run", *TINY, "--model", MODEL, "--criterion", CRITERION, "--out", str(out)]
        assert main(argv) == 0
        assert imported(code_dir) == set(MODULES)
    return out


@pytest.fixture(scope="module")
def criterion_run(code_dir, tmp_path_factory) -> Path:
    """A tiny run of a registry model whose criterion is code named in a --config file, run with
    --trust-code."""
    out = tmp_path_factory.mktemp("runs") / "criterion"
    config = code_dir / "criterion.toml"
    config.write_text(f'criterion = "{CRITERION}"\n{SETTINGS}')
    with pytest.MonkeyPatch.context() as mp, figures_off():  # no test looks at its figures
        mp.syspath_prepend(str(code_dir))
        argv = ["run", *TINY, "--config", str(config), "--out", str(out), "--trust-code"]
        assert main(argv) == 0
        assert "gate_crit" in imported(code_dir)
    return out


# ------------------------------------------------------------------------------- commands


def test_run_refuses_code_named_in_a_config_file(code_dir, tmp_path, capsys):
    for key, spec in (("model", MODEL), ("criterion", CRITERION)):
        config = tmp_path / f"{key}.toml"
        config.write_text(f'{key} = "{spec}"\n{SETTINGS}')
        out = tmp_path / key
        assert main(["run", *TINY, "--config", str(config), "--out", str(out)]) == 2
        refused(capsys, key, spec)
        assert not imported(code_dir) and not out.exists()


def test_run_with_a_config_file_and_trust_code_imports_it(criterion_run, code_dir):
    assert (criterion_run / "ticket" / "0" / "level_01" / "mask.safetensors").is_file()


def test_sweep_refuses_a_criterion_of_its_base_table(code_dir, tmp_path, capsys, no_figures):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'criterion = "{CRITERION}"\n{SETTINGS}[vary]\nrate = [0.5]\n')
    argv = ["sweep", str(sweep), "--data-dir", str(TEST_DATA), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 2
    refused(capsys, "criterion", CRITERION)
    assert not imported(code_dir) and not (tmp_path / "s").exists()
    assert main([*argv, "--out", str(tmp_path / "t"), "--trust-code"]) == 0
    assert imported(code_dir) == {"gate_crit"}
    assert (tmp_path / "t" / "rate-0.5" / "summary.csv").is_file()


def test_sweep_refuses_code_in_its_vary_table(code_dir, tmp_path, capsys):
    for key, spec in (("criterion", CRITERION), ("model", MODEL)):
        sweep = tmp_path / f"{key}.toml"
        sweep.write_text(f'{SETTINGS}[vary]\n{key} = ["{spec}"]\n')
        out = tmp_path / key
        assert main(["sweep", str(sweep), "--data-dir", str(TEST_DATA), "--out", str(out)]) == 2
        refused(capsys, key, spec)
        assert not imported(code_dir) and not out.exists()


STABILITY = ["--copies", "2", "--points", "3", "--quiet", "--data-dir", str(TEST_DATA)]


def test_stability_refuses_the_criterion_of_the_run_folder(code_dir, criterion_run, capsys):
    argv = ["stability", str(criterion_run), "--level", "1", *STABILITY]
    assert main(argv) == 2
    refused(capsys, "criterion", CRITERION)
    assert not imported(code_dir) and not (criterion_run / "stability").exists()
    assert main([*argv, "--trust-code"]) == 0
    assert (criterion_run / "stability" / "summary.csv").is_file()


def test_stability_find_rewind_refuses_the_criterion_of_the_run_folder(
    code_dir, criterion_run, capsys
):
    argv = ["stability", str(criterion_run), "--find-rewind", "--candidates", "0,10", *STABILITY]
    assert main(argv) == 2
    refused(capsys, "criterion", CRITERION)
    assert not imported(code_dir)
    assert main([*argv, "--trust-code"]) == 0
    assert "gate_crit" in imported(code_dir)


def test_stability_find_rewind_on_a_configuration(code_dir, tmp_path, capsys):
    """Code in --config needs --trust-code; code named by --criterion is imported."""
    config = tmp_path / "c.toml"
    config.write_text(f'criterion = "{CRITERION}"\n{SETTINGS}')
    argv = ["stability", "--find-rewind", "--candidates", "0", *STABILITY, *TINY[:8]]
    assert main([*argv, "--config", str(config), "--out", str(tmp_path / "a")]) == 2
    refused(capsys, "criterion", CRITERION)
    assert not imported(code_dir) and not (tmp_path / "a").exists()
    assert main([*argv, "--criterion", CRITERION, "--out", str(tmp_path / "b")]) == 0
    assert imported(code_dir) == {"gate_crit"}


def test_verify_report_and_plot_read_a_code_run_without_its_code(code_dir, code_run, capsys):
    assert main(["verify", str(code_run)]) == 0
    assert main(["report", str(code_run)]) == 0
    assert main(["plot", str(code_run), "--out", str(code_run / "figures")]) == 0
    assert MODEL in capsys.readouterr().out  # the report names it
    assert not imported(code_dir)
    assert any((code_run / "figures").iterdir())


def test_export_imports_the_runs_model_only_with_trust_code(code_dir, code_run, tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    argv = ["export", str(code_run), "--level", "1", "--format", "dense", "--out", str(out)]
    assert main(argv) == 2
    refused(capsys, "model", MODEL)
    assert not imported(code_dir) and not out.exists()
    assert main([*argv, "--trust-code"]) == 0
    assert imported(code_dir) == {"gate_model"} and out.is_file()
    forget(code_dir)
    with pytest.raises(LTHError) as exc:  # the file names the code: load_export needs trust
        load_export(out)
    assert_one_line(exc, MODEL, "trust_code=True")
    assert not imported(code_dir)
    assert load_export(out, trust_code=True)[0][1].in_features == 784


# ------------------------------------------------------------------------------ Python API


def test_load_ticket_imports_the_runs_model_only_with_trust_code(code_dir, code_run):
    with pytest.raises(LTHError) as exc:
        load_ticket(code_run, level=1)
    assert_one_line(exc, MODEL, "trust_code=True")
    assert not imported(code_dir)
    model, masks = load_ticket(code_run, level=1, trust_code=True)
    assert imported(code_dir) == {"gate_model"}
    assert set(masks) == {"1.weight", "3.weight"} and model[1].in_features == 784


def blobs():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 1, 4, 4, generator=g), torch.randint(0, 2, (120,), generator=g)
    return dataset_from_tensors("blobs", x[:100], y[:100], x[100:], y[100:], val_size=20)


def test_run_experiment_imports_code_its_config_names(code_dir):
    from lth.study.runner import run_experiment

    config = ExperimentConfig(model=MODEL, criterion=CRITERION, levels=1, iterations=4,
                              eval_every=2, batch_size=10, val_size=20, controls=())  # fmt: skip
    results = run_experiment(config, blobs(), device="cpu", quiet=True)
    assert [r.level for r in results] == [0, 1]
    assert imported(code_dir) == set(MODULES)


def test_an_experiment_imports_only_the_code_its_caller_trusts(code_dir):
    from lth.study.experiment import Experiment
    from lth.usercode import CodeTrust

    config = ExperimentConfig(model="lenet_300_100", criterion=CRITERION, levels=1)
    data = blobs()
    with pytest.raises(LTHError) as exc:
        Experiment(config, data)
    assert_one_line(exc, CRITERION, "trust_code=True")
    with pytest.raises(LTHError):
        Experiment(config, data, trust=CodeTrust(named=frozenset({MODEL})))
    assert not imported(code_dir)
    trust = pickle.loads(pickle.dumps(CodeTrust.of(config)))  # as Ray's workers get it
    assert trust == CodeTrust(named=frozenset({CRITERION}))
    assert Experiment(config, data, trust=trust).criterion.name == CRITERION
    assert imported(code_dir) == {"gate_crit"}
