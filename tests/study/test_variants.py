"""Beyond LeNet: rewinding variants, target sparsity, rates by layer type, user models and data."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import real_data
from lth.config import ExperimentConfig
from lth.core.models import build_model
from lth.data import dataset_from_tensors, load_dataset
from lth.errors import LTHError
from lth.pruning.masks import count_remaining
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment
from lth.usercode import CodeTrust

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

ANY_CODE = CodeTrust(trusted=True)  # what trust_code=True gives


@pytest.fixture(scope="module")
def small():
    mnist = load_dataset("mnist", real_data(), val_size=0, seed=0)
    return dataset_from_tensors(
        "mnist-small", mnist.train_x[:1500], mnist.train_y[:1500], mnist.test_x[:300],
        mnist.test_y[:300], val_size=300, seed=0,
    )  # fmt: skip


def cfg(**overrides) -> ExperimentConfig:
    base = dict(levels=2, iterations=30, eval_every=15, batch_size=50, val_size=300, controls=())
    return ExperimentConfig(**(base | overrides))


def by_key(results):
    return {(r.branch, r.replicate, r.level): r for r in results}


def test_lr_rewinding_restarts_the_schedule_but_keeps_the_weights(small):
    sgd = dict(optimizer="sgd", lr=0.1, momentum=0.9, milestones=(10, 20), warmup=5)
    rewind = Experiment(cfg(reset="lr_rewind", **sgd), small)
    finetune = Experiment(cfg(reset="finetune", **sgd), small)
    assert rewind.level_train_config(1) == rewind.train_config, "full schedule again"
    tuned = finetune.level_train_config(1)
    assert tuned.lr == pytest.approx(0.1 * 0.1**2) and tuned.milestones == () and tuned.warmup == 0
    a, b = by_key(rewind.run()), by_key(finetune.run())
    for results in (a, b):
        for level in (1, 2):
            prev, ticket = results[("ticket", 0, level - 1)], results[("ticket", 0, level)]
            for name, m in ticket.masks.items():
                assert torch.equal(ticket.init[name][m], prev.final[name][m]), "weights kept"
    # Same starting point at level 1, different schedules: different training.
    assert torch.equal(
        a[("ticket", 0, 1)].init["fc1.weight"], b[("ticket", 0, 1)].init["fc1.weight"]
    )
    assert not torch.equal(
        a[("ticket", 0, 1)].final["fc1.weight"], b[("ticket", 0, 1)].final["fc1.weight"]
    )


@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("pruning", ["layerwise", "global"])
def test_target_sparsity_is_reached_within_one_weight_per_layer(small, levels, pruning):
    target = 0.07
    results = by_key(Experiment(cfg(levels=levels, target=target, pruning=pruning), small).run())
    counts = count_remaining(results[("ticket", 0, levels)].masks)
    # the output layer keeps its share at output_rate 0.1 vs rate 0.2 (issue 11)
    out_kept, out_total = counts.pop("fc3.weight")
    assert abs(out_kept - out_total * target ** (math.log(0.9) / math.log(0.8))) <= 1
    if pruning == "layerwise":
        for name, (kept, total) in counts.items():
            assert abs(kept - total * target) <= 1, name
    else:
        kept = sum(k for k, _ in counts.values())
        total = sum(t for _, t in counts.values())
        assert abs(kept - total * target) <= 1
    for level in range(1, levels + 1):  # geometric schedule: the same fraction leaves each level
        frac = results[("ticket", 0, level)].weights_remaining / 100
        assert frac == pytest.approx(target ** (level / levels), abs=2e-3)


def test_rates_by_layer_type(small):
    conv = cfg(model="lenet5", levels=1, rate=0.2, conv_rate=0.1, output_rate=0.15)
    results = by_key(Experiment(conv, small).run())
    counts = count_remaining(results[("ticket", 0, 1)].masks)
    expected = {"conv1.weight": 0.1, "conv2.weight": 0.1, "fc1.weight": 0.2, "fc2.weight": 0.2,
                "fc3.weight": 0.15}  # fmt: skip
    assert set(counts) == set(expected)
    for name, (kept, total) in counts.items():
        assert kept == total - round(expected[name] * total), name


def test_prunable_parameters_by_name_pattern(small):
    exp = Experiment(cfg(prune_patterns=("fc1.*",), levels=1), small)
    assert exp.prunable == ["fc1.weight", "fc1.bias"]
    results = by_key(exp.run())
    counts = count_remaining(results[("ticket", 0, 1)].masks)
    assert set(counts) == {"fc1.weight", "fc1.bias"}
    assert counts["fc1.bias"][0] == 300 - round(0.2 * 300)
    with pytest.raises(LTHError, match="nothing to prune"):
        Experiment(cfg(prune_patterns=("nope*",)), small)


class TinyResNet(nn.Module):
    """A user-defined model with BatchNorm and a skip connection."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.block = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6 * 4 * 4, num_classes)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = h + F.relu(self.block(h))
        return self.head(F.adaptive_avg_pool2d(h, 4).flatten(1))


def user_data() -> object:
    """User tensors: three classes of 12x12 images told apart by where the bright blob is."""
    g = torch.Generator().manual_seed(0)
    n = 600
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 12, 12, generator=g) * 0.3
    for c in range(3):
        x[y == c, :, 4 * c : 4 * c + 4, 4:8] += 2.0
    return dataset_from_tensors("blobs", x[:500], y[:500], x[500:], y[500:], val_size=100)


def test_a_user_model_on_user_tensors_through_the_api():
    data = user_data()
    config = ExperimentConfig(levels=2, iterations=60, eval_every=20, batch_size=20, val_size=100)
    results = run_experiment(config, data, model=TinyResNet())
    keys = {(r.branch, r.level) for r in results}
    branches = ("ticket", "reinit", "random_prune")  # the controls start at level 1
    assert keys == {("ticket", 0)} | {(b, lvl) for b in branches for lvl in (1, 2)}
    last = by_key(results)[("ticket", 0, 2)]
    assert set(last.masks) == {"stem.weight", "block.weight", "head.weight"}, "BN not pruned"
    for name, (kept, total) in count_remaining(last.masks).items():
        rate = 0.1 if name == "head.weight" else 0.2  # the last Linear is the output layer
        once = total - round(rate * total)
        assert kept == once - round(rate * once), name
    for name, m in last.masks.items():
        assert torch.equal(last.final[name][~m], torch.zeros(int((~m).sum())))
    assert "bn.running_var" in last.final
    assert last.history.test_acc[-1] > 80.0, "the blobs are easy to learn"


def test_model_factory_from_a_module_path(tmp_path, monkeypatch, small):
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent("""
        from torch import nn

        def mlp(input_shape, num_classes):
            c, h, w = input_shape
            return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(),
                                 nn.Linear(32, num_classes))

        def no_args():
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

        def broken(input_shape, num_classes):
            raise RuntimeError("boom")

        NOT_A_FUNCTION = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_models:mlp", (1, 28, 28), 10, ANY_CODE)
    assert model[1].in_features == 784
    assert isinstance(build_model("my_models:no_args", (1, 28, 28), 10, ANY_CODE), nn.Sequential)
    config = cfg(model="my_models:mlp", levels=1)
    results = Experiment(config, small, trust=CodeTrust.of(config)).run()
    assert set(results[0].masks) == {"1.weight", "3.weight"}
    for spec, message in [
        ("no_such_module:f", "cannot import"),
        ("my_models:missing", "no function"),
        ("my_models:NOT_A_FUNCTION", "no function"),
        ("my_models:broken", "boom"),
    ]:
        with pytest.raises(LTHError, match=message) as err:
            build_model(spec, (1, 28, 28), 10, ANY_CODE)
        assert "\n" not in str(err.value)


def test_map_style_dataset_is_loaded_once_into_tensors():
    from lth.data import tensors_from_dataset

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((1, 2, 2), float(i)), i % 2

    x, y = tensors_from_dataset(Items())
    assert x.shape == (5, 1, 2, 2) and x[3].eq(3.0).all()
    assert y.tolist() == [0, 1, 0, 1, 0] and y.dtype == torch.int64
    with pytest.raises(LTHError, match="pair"):
        tensors_from_dataset([torch.zeros(2)])


def test_cifar_presets_follow_the_reference_settings():
    from lth.presets import PRESETS

    r = ExperimentConfig.from_dict(PRESETS["cifar_resnet_20"])
    assert (r.model, r.dataset, r.optimizer, r.lr, r.momentum, r.weight_decay) == (
        "resnet20", "cifar10", "sgd", 0.1, 0.9, 1e-4,
    )  # fmt: skip
    assert (r.batch_size, r.epochs, r.pruning, r.rate, r.exclude) == (
        128, 160, "global", 0.2, ("fc.weight",),
    )  # fmt: skip
    steps_per_epoch = (50_000 - r.val_size) // r.batch_size
    assert r.milestones == (80 * steps_per_epoch, 120 * steps_per_epoch)
    assert r.train_config(50_000 - r.val_size).iterations == 160 * steps_per_epoch
    for name, lr, iters, conv in (("conv2", 2e-4, 20_000, 0.1), ("conv4", 3e-4, 25_000, 0.1),
                                  ("conv6", 3e-4, 30_000, 0.15)):  # fmt: skip
        c = ExperimentConfig.from_dict(PRESETS[f"{name}_cifar10_paper"])
        assert (c.model, c.optimizer, c.lr, c.batch_size, c.iterations) == (
            name, "adam", lr, 60, iters,
        )  # fmt: skip
        assert (c.conv_rate, c.rate, c.output_rate) == (conv, 0.2, 0.1)


def test_cli_runs_a_user_model_factory_with_replicates(tmp_path, monkeypatch, capsys):
    from lth.cli import main

    (tmp_path / "user_models.py").write_text(
        "from torch import nn\n\n"
        "def mlp(input_shape, num_classes):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(),\n"
        "                         nn.Linear(64, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    code = main([
        "run", "--model", "user_models:mlp", "--levels", "1", "--iterations", "100",
        "--eval-every", "50", "--val-size", "500", "--replicates", "2", "--controls", "none",
        "--data-dir", str(real_data()), "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    stats = (out / "summary_stats.csv").read_text().splitlines()
    assert stats[0].startswith("branch,level,weights_remaining,replicates,n")
    assert [line.split(",")[:5] for line in stats[1:]] == [
        ["ticket", "0", "100.0", "2", "2"], ["ticket", "1", stats[2].split(",")[2], "2", "2"],
    ]  # fmt: skip
    assert (out / "analysis.csv").exists()
    assert (out / "ticket" / "1" / "level_01" / "mask.safetensors").exists()
