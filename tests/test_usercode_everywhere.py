"""User code the same everywhere (issue 24): every command that rebuilds a run's model finds
user modules in the current folder as ``lth run`` does, takes ``--model`` for a run of an
``nn.Module`` object, and its messages name command-line options; Python's name arguments."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file

import lth
from conftest import assert_one_line, figures_off, real_data
from lth.cli import main
from lth.errors import LTHError
from lth.runfolder.layout import level_file

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

MODULE = "mymodels_i24"
SOURCE = """
from torch import nn


def mlp(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(),
                         nn.Linear(16, num_classes))
"""
SETTINGS = ["--levels", "1", "--iterations", "20", "--eval-every", "10", "--val-size", "300"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder holding the user's module, a run of its factory made with ``lth run`` there,
    and a run of a module object made with ``run_experiment``."""
    here = tmp_path_factory.mktemp("user")
    (here / f"{MODULE}.py").write_text(SOURCE)
    with pytest.MonkeyPatch.context() as mp, figures_off():  # no_figures, for the module
        mp.chdir(here)
        mp.setattr(sys, "path", list(sys.path))
        argv = ["run", "--model", f"{MODULE}:mlp", *SETTINGS, "--controls", "reinit"]
        argv += ["--data-dir", str(real_data()), "--out", str(here / "factory"), "--quiet"]
        assert main(argv) == 0
        net = sys.modules[MODULE].mlp((1, 28, 28), 10)
    config = lth.ExperimentConfig(levels=1, iterations=20, eval_every=10, val_size=300)
    config = lth.ExperimentConfig(**{**vars(config), "controls": ("reinit",)})
    with figures_off():
        lth.run_experiment(config, model=net, out=here / "module", data_dir=real_data(), quiet=True)
    sys.modules.pop(MODULE)
    return here


@pytest.fixture
def here(runs, monkeypatch):
    monkeypatch.chdir(runs)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return runs


def export(run, out, *extra):
    argv = ["export", str(run), "--level", "1", "--format", "dense", "--out", str(out)]
    return main([*argv, *extra])


def test_export_finds_the_module_in_the_current_folder(here, tmp_path, capsys):
    assert export(here / "factory", tmp_path / "a.safetensors", "--trust-code") == 0
    assert export(here / "factory", tmp_path / "b.safetensors", "--model", f"{MODULE}:mlp") == 0
    final = load_file(level_file(here / "factory", "ticket", 0, 1, "final"))
    exported = load_file(tmp_path / "b.safetensors")
    assert torch.equal(exported["1.weight"], final["1.weight"])
    capsys.readouterr()
    assert export(here / "factory", tmp_path / "c.safetensors") == 2
    err = capsys.readouterr().err.strip()
    assert "--trust-code" in err and "--model" in err and "trust_code=True" not in err, err


def test_a_run_of_a_module_object_takes_model_on_the_command_line(here, tmp_path, capsys):
    run = here / "module"
    assert export(run, tmp_path / "a.safetensors") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--model package.module:function" in err, err
    assert "model=" not in err and "load_ticket" not in err, err
    out = tmp_path / "b.safetensors"
    assert export(run, out, "--model", f"{MODULE}:mlp") == 0
    final = load_file(level_file(run, "ticket", 0, 1, "final"))
    assert torch.equal(load_file(out)["3.weight"], final["3.weight"])
    argv = ["stability", str(run), "--level", "1", "--copies", "2", "--points", "3"]
    argv += ["--data-dir", str(real_data()), "--quiet"]
    assert main(argv) == 2
    assert "--model" in capsys.readouterr().err
    assert main([*argv, "--model", f"{MODULE}:mlp"]) == 0


def test_stability_and_resume_find_the_module_in_the_current_folder(here):
    argv = ["stability", str(here / "factory"), "--level", "1", "--copies", "2", "--points", "3"]
    assert main([*argv, "--data-dir", str(real_data()), "--quiet", "--trust-code"]) == 0
    again = ["run", "--model", f"{MODULE}:mlp", *SETTINGS, "--controls", "reinit"]
    again += ["--data-dir", str(real_data()), "--out", str(here / "factory"), "--quiet"]
    assert main(again) == 0  # resumed: everything was done


def test_python_messages_name_arguments(runs):
    with pytest.raises(LTHError) as e:
        lth.load_ticket(runs / "module", level=1)
    assert "--" not in assert_one_line(e, "model=")
    with pytest.raises(LTHError) as e:
        lth.load_ticket(runs / "factory", level=1)
    assert "--" not in assert_one_line(e, "trust_code=True")
