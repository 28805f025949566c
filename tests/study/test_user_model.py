"""θ0 from the user's model (issue 24): a user model's own weights are θ0 unless ``--init``
names a scheme; a factory is called under a seeded generator per replicate; the controls that
need fresh weights draw them as the model's own code does; registered models are unchanged."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from safetensors.torch import load_file
from torch import nn

import lth
from conftest import assert_one_line, real_data
from lth.cli import main
from lth.config import ExperimentConfig
from lth.core.init import initialize
from lth.core.models import create_model
from lth.errors import LTHError
from lth.pruning.policy import derive_seed
from lth.runfolder.layout import level_file
from lth.study.experiment import Experiment

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pretrained_mlp.py"


def toy_data(shape=(1, 4, 4), classes=3):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(120, *shape, generator=g), torch.randint(0, classes, (120,), generator=g)
    return lth.dataset_from_tensors("toy", x[:100], y[:100], x[100:], y[100:], val_size=20)


def mlp(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 8), nn.ReLU(), nn.Linear(8, 3))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_factory_is_called_under_the_replicates_seed_and_leaves_the_global_rng_alone():
    config = ExperimentConfig(levels=1, iterations=10, seed=5)
    experiment = Experiment(config, toy_data(), model=mlp)
    assert experiment.config.init == "model"
    state = torch.get_rng_state()
    theta = [experiment.theta0(r) for r in (0, 1)]
    assert torch.equal(torch.get_rng_state(), state)
    for r in (0, 1):  # oracle: the factory called after torch.manual_seed(the replicate's seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(5, "init", r))
            expected = mlp((1, 4, 4), 3).state_dict()
        assert same(theta[r], expected)
    assert not torch.equal(theta[0]["1.weight"], theta[1]["1.weight"])
    assert theta[0]["1.bias"].abs().sum() > 0  # PyTorch's own init, not a scheme's zero biases
    fresh = experiment.fresh_weights("reinit", 0, 1)
    assert not torch.equal(fresh["1.weight"], theta[0]["1.weight"])


def test_an_explicit_init_scheme_overrides_the_models_own():
    config = ExperimentConfig(levels=1, iterations=10, init="xavier_normal")
    experiment = Experiment(config, toy_data(), model=mlp)
    assert experiment.config.init == "xavier_normal"
    theta = experiment.theta0(0)
    assert theta["1.bias"].abs().sum() == 0  # the scheme's zero biases
    fan_in, fan_out = 16, 8
    assert abs(theta["1.weight"].std().item() - math.sqrt(2 / (fan_in + fan_out))) < 0.15


def test_a_module_object_is_theta0_and_reinit_resets_its_layers():
    torch.manual_seed(3)
    net = mlp((1, 4, 4), 3)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    experiment = Experiment(ExperimentConfig(levels=1, iterations=10), toy_data(), model=net)
    assert experiment.config.init == "model"
    assert same(experiment.theta0(0), weights) and same(experiment.theta0(1), weights)
    fresh = experiment.fresh_weights("reinit", 0, 1)
    assert same(fresh, experiment.fresh_weights("reinit", 0, 1))  # seeded
    assert not torch.equal(fresh["1.weight"], weights["1.weight"])
    bound = 1 / math.sqrt(16)  # nn.Linear.reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert fresh["1.weight"].abs().max() <= bound and fresh["1.bias"].abs().sum() > 0


def test_a_module_without_reset_parameters_cannot_give_fresh_weights():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(16))

        def forward(self, x):
            return x * self.s

    net = nn.Sequential(nn.Flatten(), Scale(), nn.Linear(16, 3))
    experiment = Experiment(ExperimentConfig(levels=1, iterations=10), toy_data(), model=net)
    with pytest.raises(LTHError) as e:
        experiment.fresh_weights("reinit", 0, 0)
    assert_one_line(e, "reset_parameters", "'1'", "--init")


def test_registered_models_keep_their_papers_initialisation():
    data = toy_data((1, 28, 28), 10)
    experiment = Experiment(ExperimentConfig(levels=1, iterations=10), data)
    assert experiment.config.init == "xavier_normal"
    model = create_model("lenet_300_100", (1, 28, 28), 10)
    initialize(model, "xavier_normal", torch.Generator().manual_seed(derive_seed(0, "init", 1)))
    assert same(experiment.theta0(1), model.state_dict())


def test_imp_from_a_pretrained_checkpoint(tmp_path, monkeypatch):
    """The documented example (docs/examples/pretrained_mlp.py) from the command line."""
    shutil.copy(EXAMPLE, tmp_path / "pretrained_mlp.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # lth adds the current folder
    monkeypatch.delenv("PRETRAINED_MLP", raising=False)
    monkeypatch.delitem(sys.modules, "pretrained_mlp", raising=False)
    import importlib.util

    spec = importlib.util.spec_from_file_location("example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.save_checkpoint("mlp.safetensors")
    checkpoint = load_file("mlp.safetensors")
    run = tmp_path / "run"
    argv = ["run", "--model", "pretrained_mlp:mlp", "--levels", "1", "--iterations", "20"]
    argv += ["--eval-every", "10", "--val-size", "300", "--replicates", "2"]
    argv += ["--controls", "reinit", "--data-dir", str(real_data()), "--out", str(run), "--quiet"]
    assert main(argv) == 0
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["init"] == "model" and config["model"] == "pretrained_mlp:mlp"
    for r in (0, 1):  # every replicate starts from the checkpoint itself
        assert same(load_file(level_file(run, "ticket", r, 0, "init")), checkpoint)
    reinit = load_file(level_file(run, "reinit", 0, 1, "init"))  # controls start at level 1
    assert not torch.equal(reinit["1.weight"], checkpoint["1.weight"])
    assert reinit["1.weight"].abs().max() <= 1 / math.sqrt(784)  # nn.Linear's own init
    assert main(["verify", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    out = tmp_path / "t.safetensors"  # the same folder finds the module for export too
    argv = ["export", str(run), "--level", "1", "--format", "dense", "--out", str(out)]
    assert main([*argv, "--trust-code"]) == 0 and out.is_file()


def test_the_examples_of_lth_core_theta0_run():
    import doctest

    import lth.core.theta0

    result = doctest.testmod(lth.core.theta0, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
