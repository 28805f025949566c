"""Your own data from the command line (issue 24): ``lth run --dataset module:function``
returning an ``lth.Dataset`` or a (train, test) pair of torch datasets; each bad dataset is one
line and leaves no run folder."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

import lth
from conftest import assert_one_line, real_data
from lth.cli import main
from lth.data.user import MAX_BYTES_ENV, user_dataset
from lth.errors import LTHError
from lth.usercode import CodeTrust

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

MODULE = "user_data_i24"

SOURCE = """
import torch
from torch.utils.data import TensorDataset

import lth


def tensors(n, shape=(1, 6, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    y = (x.flatten(1).mean(1) > 0.5).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()
    return x, y


def pair():
    return TensorDataset(*tensors(200)), TensorDataset(*tensors(60, seed=1))


def dataset():
    (x, y), (tx, ty) = tensors(200), tensors(60, seed=1)
    return lth.dataset_from_tensors("mine", x, y, tx, ty, val_size=40)


def wrong_shapes():
    return TensorDataset(*tensors(200)), TensorDataset(*tensors(60, shape=(1, 5, 5)))


def labels_out_of_range():
    data = dataset()
    bad = data.test_y.clone()
    bad[0] = 7
    return lth.Dataset(**{**vars(data), "test_y": bad})


def wrong_dtype():
    data = dataset()
    return lth.Dataset(**{**vars(data), "train_x": (data.train_x * 255).to(torch.uint8)})


def float_labels():
    (x, y), (tx, ty) = tensors(200), tensors(60, seed=1)
    return TensorDataset(x, y.float() + 0.5), TensorDataset(tx, ty)


def not_a_pair():
    return [1, 2, 3]


def fails():
    raise RuntimeError("no such file: data.npz")
"""

RUN = ["run", "--levels", "1", "--iterations", "10", "--eval-every", "5", "--batch-size", "20"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("userdata")
    (path / f"{MODULE}.py").write_text(SOURCE)
    return path


@pytest.fixture
def here(folder, monkeypatch):
    """The user's folder is the current one, as when they type ``lth run`` there."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))  # lth adds the current folder
    return folder


def test_a_pair_of_torch_datasets_from_the_command_line(here, tmp_path):
    run = tmp_path / "run"
    argv = [*RUN, "--dataset", f"{MODULE}:pair", "--val-size", "40", "--out", str(run)]
    assert main([*argv, "--quiet", "--controls", "reinit"]) == 0
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["dataset"] == f"{MODULE}:pair"
    assert config["source"]["data_input_shape"] == [1, 6, 6]
    assert config["source"]["data_num_classes"] == 4
    assert any("train_x (160, 1, 6, 6)" in e for e in config["source"]["data_tensors"])
    assert main(["verify", str(run)]) == 0
    out = tmp_path / "t.safetensors"  # the shapes come from the run folder
    assert main(["export", str(run), "--level", "1", "--format", "dense", "--out", str(out)]) == 0


def test_a_dataset_is_used_as_it_is_and_must_hold_out_val_size(here):
    trust = CodeTrust(trusted=True)
    data = user_dataset(f"{MODULE}:dataset", trust, val_size=40)
    x = sys.modules[MODULE].tensors(200)[0]
    assert torch.equal(torch.cat([data.train_x, data.val_x]).sort(0).values, x.sort(0).values)
    assert data.name == "mine" and data.sizes == {"train": 160, "val": 40, "test": 60}
    with pytest.raises(LTHError) as e:
        user_dataset(f"{MODULE}:dataset", trust, val_size=100)
    assert_one_line(e, "holds out 40", "--val-size 40")


BAD = [
    ("wrong_shapes", "(1, 5, 5)"),
    ("labels_out_of_range", "test_y has labels from 0 to 7, outside [0, 4)"),
    ("wrong_dtype", "train_x has dtype torch.uint8"),
    ("float_labels", "labels must be whole numbers"),
    ("not_a_pair", "returned a list"),
    ("fails", "RuntimeError: no such file: data.npz"),
]


@pytest.mark.parametrize(("function", "needle"), BAD)
def test_a_bad_dataset_is_one_line_and_leaves_no_folder(function, needle, here, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [*RUN, "--dataset", f"{MODULE}:{function}", "--val-size", "40", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lth: error: ") and "\n" not in err and needle in err, err
    assert not run.exists()


def test_images_over_the_memory_cap_are_refused(here, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "1000")
    run = tmp_path / "run"
    assert main([*RUN, "--dataset", f"{MODULE}:pair", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and MAX_BYTES_ENV in err and "GiB" in err, err
    assert not run.exists()


def test_data_named_in_a_config_file_needs_trust(here, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'dataset = "{MODULE}:pair"\nval_size = 40\n')
    run = tmp_path / "run"
    assert main([*RUN, "--config", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "dataset code" in err and "--dataset" in err and "--trust-code" in err, err
    assert not run.exists()


def test_the_dataset_contract_is_checked_whole():
    data = lth.dataset_from_tensors(
        "toy", torch.rand(8, 2), torch.arange(8) % 2, torch.rand(2, 2), torch.tensor([0, 1]),
        val_size=2,
    )  # fmt: skip
    from lth.data.user import check_dataset

    assert check_dataset(data, "m:f") is data
    short = lth.Dataset(**{**vars(data), "val_y": data.val_y[:1]})
    with pytest.raises(LTHError) as e:
        check_dataset(short, "m:f")
    assert_one_line(e, "val_y", "(2,)")


def test_the_examples_of_lth_data_user_run(offline_and_isolated):
    import doctest

    import lth.data.user

    result = doctest.testmod(lth.data.user, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_the_npz_example_trains_on_real_mnist_from_the_command_line(tmp_path, monkeypatch):
    """docs/examples/npz_data.py on 1,200 real MNIST images saved as a .npz file."""
    mnist = lth.load_dataset("mnist", real_data(), val_size=0)
    x, y = mnist.train_raw[:1200, 0].numpy(), mnist.train_y[:1200].numpy()
    np.savez(tmp_path / "data.npz", x_train=x[:1000], y_train=y[:1000], x_test=x[1000:],
             y_test=y[1000:])  # fmt: skip
    shutil.copy(EXAMPLES / "npz_data.py", tmp_path / "npz_data.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("NPZ_DATA", raising=False)
    run = tmp_path / "run"
    argv = ["run", "--dataset", "npz_data:load", "--val-size", "100", "--levels", "1"]
    argv += ["--iterations", "30", "--eval-every", "15", "--controls", "none", "--out", str(run)]
    assert main([*argv, "--quiet"]) == 0
    info = tomllib.loads((run / "config.toml").read_text())
    assert info["dataset"] == "npz_data:load" and info["source"]["data_num_classes"] == 10
    with open(run / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["test_acc"]) > 50, rows[0]  # labels and images kept together
    assert main(["verify", str(run)]) == 0
