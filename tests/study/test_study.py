"""A study run from Python: saved with one argument, recorded as it really ran, loadable."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import assert_one_line
from lth import ExperimentConfig, LTHError, dataset_from_tensors, load_ticket, run_experiment
from lth.analysis.report import report
from lth.configfile import read_run_config, read_run_info


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


def blobs(n: int = 400, seed: int = 0):
    """A 3-class task where the class is where a bright blob is."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 2, 2:6] += 2.0
    return dataset_from_tensors("blobs", x[:300], y[:300], x[300:], y[300:], val_size=50)


class Net(nn.Module):
    """Not a flat Sequential: trained through the generic engine."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.flatten(1))))


def net_factory(input_shape, num_classes):
    """A module-level factory: recorded by name."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, num_classes))


CONFIG = ExperimentConfig(levels=1, iterations=30, eval_every=10, batch_size=20, val_size=50)


def test_user_model_and_data_saved_with_out_are_recorded(tmp_path, capsys, no_figures):
    data = blobs()
    out = tmp_path / "study"
    results = run_experiment(CONFIG, data, model=Net(), out=out, device="cpu")
    assert "level 1/1" in capsys.readouterr().out  # the same per-level lines as lth run
    config = read_run_config(out)
    assert config.model == "user model" and config.dataset == "blobs"
    source = read_run_info(out)["source"]
    assert source["model_class"] == "Net"
    assert "body.weight (16, 64)" in source["model_parameters"]
    assert source["data_input_shape"] == [1, 8, 8] and source["data_num_classes"] == 3
    assert len(source["data_sha256"]) == 64
    assert "level" in report(out)  # the report reads it

    with pytest.raises(LTHError) as exc:
        load_ticket(out, level=1)
    assert_one_line(exc, "user model", "model=")
    model, masks = load_ticket(out, level=1, model=Net())
    ticket = next(r for r in results if r.branch == "ticket" and r.level == 1)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ticket.final[name]), name
    assert torch.equal(masks["body.weight"], ticket.masks["body.weight"])


def test_user_factory_is_recorded_as_module_function_and_needs_trust(tmp_path, no_figures):
    out = tmp_path / "study"
    run_experiment(CONFIG, blobs(), model=net_factory, out=out, device="cpu", quiet=True)
    assert read_run_config(out).model == f"{__name__}:net_factory"
    with pytest.raises(LTHError) as exc:
        load_ticket(out, level=0)
    assert_one_line(exc, "trust_code=True")
    model, _ = load_ticket(out, level=0, model=net_factory)
    assert isinstance(model, nn.Sequential)


def test_same_results_in_memory_and_in_a_folder(tmp_path, no_figures):
    data, net = blobs(), Net()  # θ0 is the module's own weights: the same module twice
    memory = run_experiment(CONFIG, data, model=copy.deepcopy(net), device="cpu", quiet=True)
    saved = run_experiment(
        CONFIG, data, model=copy.deepcopy(net), out=tmp_path / "s", device="cpu", quiet=True
    )
    assert [(r.branch, r.level) for r in memory] == [(r.branch, r.level) for r in saved]
    for a, b in zip(memory, saved, strict=True):
        assert a.history.val_loss == b.history.val_loss
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name])
