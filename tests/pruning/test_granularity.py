"""Structured tickets (issue 21): ``--granularity neuron|channel`` removes whole units, ranked by
their summed scores (the L1 norm for magnitude, Li et al. 2017); every unit is all kept or all
pruned; ``lth verify`` (with and without the weights) checks it; ``shrunk`` export gives
physically smaller layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line, figures_off
from helpers import mnist_slice, quick
from lth.cli import main
from lth.config import ExperimentConfig
from lth.core.fileio import file_sha256, load_tensors
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.pruning.granularity import prune_units
from lth.runfolder.packed import PackedMasks, write_packed
from lth.runfolder.verify import VerifyError, verify_run
from lth.runfolder.verify_published import verify_published
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


def oracle(scores: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Whole-unit pruning written out unit by unit: sum each alive unit's surviving scores,
    remove round(rate x alive) lowest (ties: lower index)."""
    units = []
    for u in range(mask.shape[0]):
        pairs = zip(scores[u].flatten().tolist(), mask[u].flatten().tolist(), strict=True)
        if bool(mask[u].any()):
            units.append((sum(s for s, kept in pairs if kept), u))
    gone = {u for _, u in sorted(units)[: round(rate * len(units))]}
    new = mask.clone()
    for u in gone:
        new[u] = False
    return new


@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 2, 2)])
def test_prune_units_matches_a_unit_by_unit_oracle(shape):
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(shape, generator=gen) < 0.8
    mask[2] = False  # a unit already gone is not counted again
    scores = torch.rand(shape, generator=gen)
    for rate in (0.2, 0.5):
        got = prune_units({"w": scores}, {"w": mask}, {"w": rate}, {"w"})["w"]
        assert torch.equal(got, oracle(scores, mask, rate))
        rows, was = got.reshape(shape[0], -1), mask.reshape(shape[0], -1)
        assert bool(((rows == was).all(1) | ~rows.any(1)).all())  # all kept or all pruned


def test_layers_not_structured_are_pruned_weight_by_weight():
    masks = {"a": torch.ones(4, 4, dtype=torch.bool), "b": torch.ones(3, 4, dtype=torch.bool)}
    scores = {"a": torch.arange(16.0).reshape(4, 4), "b": torch.arange(12.0).reshape(3, 4)}
    new = prune_units(scores, masks, {"a": 0.5, "b": 0.25}, {"a"})
    assert new["a"].any(1).tolist() == [False, False, True, True]
    assert new["b"].reshape(-1).tolist() == [False] * 3 + [True] * 9


@pytest.fixture(scope="module")
def structured(tmp_path_factory) -> Path:
    """A real tiny MNIST study with whole-neuron pruning, 2 levels, both controls."""
    out = tmp_path_factory.mktemp("structured") / "run"
    data = mnist_slice(1500, 500)
    config = quick(levels=2, iterations=40, eval_every=20, granularity="neuron")
    with figures_off():  # no_figures, for the module
        run_experiment(config, data, out=out, quiet=True)
    return out


def test_a_structured_study_removes_whole_neurons_and_verifies(structured, tmp_path):
    lines = verify_run(structured)
    assert any(ln.startswith("ok magnitude: 2") for ln in lines), lines
    for branch in ("ticket", "reinit"):
        for level, alive in ((1, (240, 80)), (2, (192, 64))):
            m = load_tensors(structured / branch / "0" / f"level_{level:02d}" / "mask.safetensors")
            for name, units in zip(("fc1.weight", "fc2.weight"), alive, strict=True):
                rows = m[name].bool()
                assert bool((rows.all(1) | ~rows.any(1)).all()), (branch, level, name)
                assert int(rows.any(1).sum()) == units
            assert bool(m["fc3.weight"].bool().all())  # the classes stay
    out = tmp_path / "t.safetensors"
    argv = ["export", str(structured), "--level", "2", "--format", "shrunk", "--out", str(out)]
    assert main(argv) == 0
    shapes = {n: tuple(t.shape) for n, t in load_tensors(out).items() if n.endswith("weight")}
    assert shapes == {"fc1.weight": (192, 784), "fc2.weight": (64, 192), "fc3.weight": (10, 64)}


def test_a_partly_pruned_unit_fails_verify_of_the_published_folder(structured, tmp_path):
    pub = tmp_path / "pub"
    assert main(["publish", str(structured), str(pub), "--no-report"]) == 0
    verify_published(pub)
    packed = PackedMasks.load(pub / "masks.safetensors")
    masks = {k: packed.masks(k) for k in packed.networks()}
    row = masks["ticket", 0, 2]["fc1.weight"]
    u = int(row.any(1).nonzero()[0])
    row[u, int(row[u].nonzero()[0])] = False  # one weight of a kept neuron
    write_packed(pub / "masks.safetensors", masks, packed.output)
    info = json.loads((pub / "published.json").read_text())
    info["files"] = {n: file_sha256(pub / n) for n in info["files"]}
    (pub / "published.json").write_text(json.dumps(info))
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check pruning-count failed", f"unit {u} is partly pruned", "fc1.weight")


def test_structured_pruning_refuses_what_it_cannot_do():
    with pytest.raises(LTHError) as e:
        ExperimentConfig(granularity="neuron", pruning="global")
    assert_one_line(e, "granularity neuron", "pruning layerwise")
    with pytest.raises(LTHError) as e:
        ExperimentConfig(granularity="neuron", target=0.1)
    assert_one_line(e, "target sparsity")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    data = dataset_from_tensors("toy", x, y, x[:16], y[:16], val_size=8)
    with pytest.raises(LTHError) as e:
        Experiment(quick(granularity="channel"), data)
    assert_one_line(e, "no conv layer", "granularity neuron")


def test_each_level_reports_the_shrunk_tickets_params_and_flops(structured, tmp_path):
    """summary.csv's params and flops are those of the physically smaller network: for a
    structured LeNet-300-100 ticket every weight of the shrunk layers is kept, so params is
    the shrunk file's size in numbers and flops its weights (one MAC each)."""
    from lth.analysis.report import report
    from lth.runfolder.readers import load_summary

    rows = {(r.branch, r.level): r for r in load_summary(structured)}
    assert (rows["ticket", 0].params, rows["ticket", 0].flops) == (266_610, 266_200)
    out = tmp_path / "t.safetensors"
    argv = ["export", str(structured), "--level", "2", "--format", "shrunk", "--out", str(out)]
    assert main(argv) == 0
    tensors = load_tensors(out)
    assert rows["ticket", 2].params == sum(t.numel() for t in tensors.values()) == 163_722
    weights = sum(t.numel() for n, t in tensors.items() if n.endswith("weight"))
    assert rows["ticket", 2].flops == weights
    text = report(structured)
    assert "params" in text and "MFLOPs" in text and "163,722" in text
