"""``run_experiment(quiet=True)`` prints nothing; a run's config.toml records only the settings
that apply to it (and old files that record every setting still read, verify and resume); the
report's header names a criterion, an initialisation, a precision or a granularity that is not
the default; an export of a user model names it once."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import figures_off
from helpers import make_run, reseal
from lth.analysis.report import describe_config, report
from lth.analysis.results import load_runs, method_parts
from lth.config import ExperimentConfig
from lth.configfile import NOT_APPLYING, applied_settings, config_from_toml, toml_text
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.runfolder.export import export_ticket, load_export
from lth.runfolder.runs import RunFolder, read_config
from lth.runfolder.verify import verify_run
from lth.study.runner import run_experiment

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

CONFIG = ExperimentConfig(levels=1, iterations=20, eval_every=10, batch_size=20, val_size=20)


def toy_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 1, 4, 4, generator=g), torch.randint(0, 3, (200,), generator=g)
    return dataset_from_tensors("toy", x[:160], y[:160], x[160:], y[160:], val_size=20)


def toy_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    """A run folder of a user model on user data (made with quiet=True), and the model."""
    run, net = tmp_path_factory.mktemp("quiet") / "run", toy_net()
    with figures_off():  # no_figures, for the module
        run_experiment(CONFIG, toy_data(), model=net, out=run, quiet=True)
    return run, net


# ----------------------------------------------------------------------------- quiet


def test_quiet_run_experiment_prints_nothing_new_or_resumed(tmp_path, capfd):
    run, data = tmp_path / "run", toy_data()
    results = run_experiment(CONFIG, data, model=toy_net(), out=run, quiet=True)
    assert len(results) == 4  # the dense network, then the ticket and its two controls
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    run_experiment(CONFIG, data, model=toy_net(), out=run, quiet=True)  # resumed: all done
    assert capfd.readouterr() == ("", "")
    run_experiment(CONFIG, data, model=toy_net(), quiet=True)  # no run folder
    run_experiment(CONFIG, data, model=toy_net(), quiet=True, store=RunFolderless())
    assert capfd.readouterr() == ("", "")
    # without quiet the same call speaks (so the test above can fail)
    run_experiment(CONFIG, data, model=toy_net(), store=RunFolderless())
    out, _ = capfd.readouterr()
    assert "level 0/1:" in out and "level 1/1:" in out


class RunFolderless:
    """A Store that keeps nothing (what MemoryStore does), passed explicitly."""

    def load_level(self, level):
        return None

    def save_level(self, level, results):
        pass

    def load_checkpoint(self, level, group):
        return None

    def save_checkpoint(self, level, group, trainer):
        pass

    def save_unit(self, level, group, state):
        pass


def test_quiet_keeps_warnings(capfd):
    """Nothing but warnings: a study without validation data says it has no early stop."""
    data = toy_data()
    data = dataclasses.replace(data, val_x=data.val_x[:0], val_y=data.val_y[:0])
    run_experiment(dataclasses.replace(CONFIG, levels=0), data, model=toy_net(), quiet=True)
    out, err = capfd.readouterr()
    assert out == "" and "no validation set" in err


# ----------------------------------------------------------------------------- config.toml


def written(tmp_path: Path, config: ExperimentConfig, augments: bool | None = None) -> dict:
    """The settings a new run folder's config.toml records for ``config``."""
    folder = RunFolder(tmp_path / "run", config)
    folder.augments = augments
    with folder:
        pass
    return config_from_toml(tmp_path / "run" / "config.toml", "test")


@pytest.mark.parametrize(
    ("changes", "left_out"),
    [
        ({}, {"augment", "momentum", "gamma"}),  # MNIST does not augment, Adam, no milestones
        ({"dataset": "cifar10"}, {"momentum", "gamma"}),
        ({"optimizer": "sgd", "momentum": 0.9, "milestones": (10,)}, {"augment"}),
        ({"reset": "finetune"}, {"augment", "momentum", "gamma", "rewind_iteration"}),
        ({"epochs": 2}, {"augment", "momentum", "gamma", "iterations"}),
        ({"prune_patterns": ("*.weight",)}, {"augment", "momentum", "gamma", "prune_types"}),
        ({"pruning": "global"}, {"augment", "momentum", "gamma", "conv_rate"}),
        (
            {"levels": 0},
            {
                "augment",
                "momentum",
                "gamma",
                "conv_rate",
                "rate",
                "output_rate",
                "target",
                "pruning",
                "criterion",
                "controls",
            },
        ),  # fmt: skip
    ],
)
def test_config_toml_records_only_the_settings_that_apply(tmp_path, changes, left_out):
    config = dataclasses.replace(CONFIG, **changes)
    values = written(tmp_path, config)
    assert set(config.to_dict()) - set(values) == left_out
    assert all(values[k] == getattr(config, k) for k in values)
    # read back (missing => default), it is the same study, and a resume accepts it
    back = read_config(tmp_path / "run")
    aug = changes.get("dataset") == "cifar10"
    assert applied_settings(back.to_dict(), aug) == applied_settings(config.to_dict(), aug)
    with RunFolder(tmp_path / "run", config):
        pass


def test_a_setting_that_does_not_apply_is_not_a_difference_on_resume(tmp_path):
    """Adam ignores momentum: config.toml leaves it out, and a resume with it set is the same
    study; a setting that applies still refuses the resume."""
    config = dataclasses.replace(CONFIG, momentum=0.5)
    assert "momentum" not in written(tmp_path, config)
    with RunFolder(tmp_path / "run", dataclasses.replace(CONFIG, momentum=0.7)):
        pass
    with pytest.raises(LTHError, match=r"other settings: lr \(0.0012 -> 0.1\)"):
        RunFolder(tmp_path / "run", dataclasses.replace(CONFIG, lr=0.1)).check()


def test_user_data_without_augmentation_leaves_augment_out(quiet_run):
    run, _ = quiet_run
    text = (run / "config.toml").read_text()
    assert "augment" not in text and "momentum" not in text
    assert 'model = "user model"' in text and "init = " in text  # init: another issue's


def test_applied_settings_are_stable_when_read_back():
    """A test of NOT_APPLYING reads only settings no test drops: settings read back from a
    file (defaults for the missing ones) drop the same settings again."""
    for changes in [{}, {"levels": 0, "reset": "finetune"}, {"levels": 0, "pruning": "global"},
                    {"epochs": 3, "prune_patterns": ("*",)}]:  # fmt: skip
        config = dataclasses.replace(CONFIG, **changes).to_dict()
        once = applied_settings(config, False)
        assert applied_settings(once, False) == once
    assert set(NOT_APPLYING) <= set(ExperimentConfig().to_dict())


def test_an_old_config_toml_with_every_setting_reads_verifies_and_resumes(quiet_run, tmp_path):
    """A run folder of an older lth records every setting (augment = true for data that
    does not augment, momentum for Adam): it still reads, verifies and resumes."""
    run, net = quiet_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    text = (old / "config.toml").read_text()
    info = text[text.index("\n[") :]
    config = dataclasses.replace(CONFIG, dataset="toy", model="user model")
    (old / "config.toml").write_text(toml_text(config.to_dict()).rstrip("\n") + info)
    reseal(old)
    assert "augment = true" in (old / "config.toml").read_text()
    assert read_config(old) == config
    assert verify_run(old)
    # an older lth gave a user model xavier_normal (now its own weights): resuming names it
    resumed = dataclasses.replace(CONFIG, init="xavier_normal")
    run_experiment(resumed, toy_data(), model=net, out=old, quiet=True)  # resumes: all done
    assert "augment" not in (old / "config.toml").read_text()  # lth's own file, rewritten
    assert verify_run(old)


# ----------------------------------------------------------------------------- the report


def header(text: str) -> str:
    """The report's line that describes the study."""
    return next(line for line in text.splitlines() if line.startswith("lenet_300_100 on mnist"))


def test_report_header_names_a_criterion_and_init_that_are_not_the_default(tmp_path):
    plain = make_run(tmp_path / "plain")
    other = make_run(
        tmp_path / "other", settings='criterion = "mycrit:movement"\ninit = "kaiming_normal"'
    )
    head = header(report(plain))
    assert "criterion" not in head and "init" not in head
    head = header(report(other))
    assert "criterion mycrit:movement" in head and "init kaiming_normal" in head
    assert "criterion mycrit:movement" in report(other, "md")
    assert "criterion mycrit:movement" in report(other, "latex")
    assert describe_config(load_runs(other)[0].settings).startswith(
        "lenet_300_100 on mnist, criterion mycrit:movement, init kaiming_normal"
    )


def test_method_parts_names_any_of_the_settings_present_and_not_default():
    config = {"criterion": "magnitude", "init": "xavier_normal"}
    assert method_parts(config) == []
    config |= {"precision": "bfloat16", "granularity": "channel", "criterion": "snip"}
    assert method_parts(config) == ["criterion snip", "precision bfloat16", "granularity channel"]


# ----------------------------------------------------------------------------- typo


def test_an_export_of_a_user_model_names_it_once(quiet_run, tmp_path):
    run, net = quiet_run
    path = tmp_path / "t.safetensors"
    export_ticket(run, 1, out=path, model=net)
    with pytest.raises(LTHError) as info:
        load_export(path)
    assert "holds a user model that lth cannot build" in str(info.value)
    assert "model model" not in str(info.value)
