"""Settings declared once: defaults, checks, docstrings, options, presets and TOML agree."""

from __future__ import annotations

import dataclasses
import math

import pytest

from conftest import assert_one_line
from lth.cli import build_parser, main, resolve_config
from lth.cli.options import option_name
from lth.config import ExperimentConfig, StudyConfig, TrainConfig
from lth.configfile import config_from_toml, toml_text
from lth.errors import LTHError
from lth.presets import PRESETS, preset_config


def _parse_run(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_python_and_command_line_defaults_are_one_study():
    """run_experiment() with no arguments runs what `lth run` with no options runs."""
    assert ExperimentConfig() == preset_config("default") == resolve_config(_parse_run())
    assert PRESETS["default"] == {}


def test_training_settings_are_declared_once():
    """ExperimentConfig has TrainConfig's fields (not copies) and hands them on unchanged."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    study_fields = {f.name for f in dataclasses.fields(StudyConfig)}
    all_fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    assert len(all_fields) == len(set(all_fields))
    assert train_fields | study_fields <= set(all_fields)
    config = ExperimentConfig(iterations=700, lr=0.01, milestones=(300, 600), gamma=0.5)
    tc = config.train_config(55_000)
    assert {f: getattr(tc, f) for f in train_fields} == {
        f: getattr(config, f) for f in train_fields
    }
    epochs = dataclasses.replace(config, epochs=2, milestones=())
    assert epochs.train_config(6000).iterations == 2 * (6000 // 60)


def test_every_setting_has_help_in_docstring_and_an_option_with_its_default():
    help_text = " ".join(
        build_parser()._subparsers._group_actions[0].choices["run"].format_help().split()
    )
    defaults = preset_config("default")
    for f in dataclasses.fields(ExperimentConfig):
        text = f.metadata["help"]
        assert text and f"{f.name} (" in ExperimentConfig.__doc__, f.name
        assert " ".join(text.split()) in " ".join(ExperimentConfig.__doc__.split()), f.name
        assert option_name(f.name) in help_text, f.name
        shown = getattr(defaults, f.name)
        shown = ",".join(map(str, shown)) or "none" if isinstance(shown, tuple) else str(shown)
        assert f"(default: {shown})" in help_text, f.name
    for name in ("lenet_300_100", "resnet20", "fashion_mnist", "xavier_normal"):
        assert name in help_text
    assert "package.module:function" in help_text


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_toml(name, tmp_path):
    config = preset_config(name)
    path = tmp_path / "config.toml"
    path.write_text(toml_text(config.to_dict() | {"environment": {"torch": "x"}}))
    assert ExperimentConfig.from_dict(config_from_toml(path)) == config


def test_a_config_file_from_before_the_restructuring_still_loads(tmp_path):
    """config.toml as lth wrote it before settings were declared in one module."""
    old = (
        'model = "lenet_300_100"\ndataset = "mnist"\ninit = "xavier_normal"\nlevels = 2\n'
        "rate = 0.2\noutput_rate = 0.1\nconv_rate = 0.0\ntarget = 0.0\n"
        'pruning = "layerwise"\nexclude = []\nprune_types = ["Linear", "Conv2d"]\n'
        'prune_patterns = []\nreset = "rewind"\nrewind_iteration = 0\n'
        'controls = ["reinit", "random_prune"]\nreplicates = 1\niterations = 200\nepochs = 0\n'
        'batch_size = 60\noptimizer = "adam"\nlr = 0.0012\nmomentum = 0.0\nweight_decay = 0.0\n'
        "milestones = []\ngamma = 0.1\nwarmup = 0\neval_every = 100\nval_size = 1000\nseed = 0\n"
        'max_parallel = 16\naugment = true\n\n[environment]\ndevice = "cpu"\ntorch = "2.13.0"\n'
    )
    path = tmp_path / "config.toml"
    path.write_text(old)
    config = ExperimentConfig.from_dict(config_from_toml(path))
    assert config == ExperimentConfig(levels=2, iterations=200, val_size=1000, pruning="layerwise")


BAD = [
    ({"weight_decay": math.nan}, "weight_decay must be a finite number >= 0, got nan"),
    ({"weight_decay": math.inf}, "weight_decay must be a finite number >= 0, got inf"),
    ({"gamma": math.inf}, "gamma must be a positive number, got inf"),
    ({"gamma": math.nan}, "gamma must be a positive number, got nan"),
    ({"lr": math.nan}, "lr must be a positive number, got nan"),
    ({"momentum": 1.0}, "momentum must be a finite number >= 0 and < 1, got 1.0"),
    ({"warmup": -1}, "warmup must be a whole number >= 0, got -1"),
    ({"warmup": 10_000}, "warmup 10000 is longer than the 5000 training iterations"),
    ({"milestones": (-5,)}, "milestones must be whole numbers >= 1 (iterations), got [-5]"),
    ({"milestones": (300, 200)}, "milestones must be in increasing order"),
    ({"milestones": (9000,)}, "milestone 9000 is past the 5000 training iterations"),
    ({"seed": 2**63}, "seed must be a whole number >= 0, got 9223372036854775808"),
    ({"iterations": 2**64}, "iterations must be a whole number >= 1"),
    ({"levels": 10**23}, "levels must be a whole number >= 0 and <= 10000"),
    ({"controls": ("reinit", "reinit")}, "each control may be named once"),
    ({"model": ""}, "model must be a non-empty name"),
]


@pytest.mark.parametrize("values, message", BAD, ids=[str(v) for v, _ in BAD])
def test_bad_settings_are_one_line_errors(values, message):
    with pytest.raises(LTHError) as exc:
        ExperimentConfig(**values)
    assert_one_line(exc, message)


def test_config_file_with_byte_order_mark_and_empty_config_path(tmp_path, capsys):
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufefflevels = 1\n".encode())
    assert config_from_toml(path) == {"levels": 1}
    assert main(["run", "--config", "", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--config is empty" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_huge_integer_on_the_command_line_never_reaches_config_toml(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--seed", str(2**64), "--out", str(out), "--quiet"]) == 2
    assert "seed must be a whole number >= 0" in capsys.readouterr().err
    assert not out.exists()


def test_the_documented_run_folder_tables_match_their_declarations():
    """docs/run-folder.md is generated from lth.runfolder.tables; regenerate it when a column
    changes."""
    from pathlib import Path

    from lth.runfolder.tables import schema_markdown

    doc = (Path(__file__).resolve().parents[1] / "docs" / "run-folder.md").read_text()
    assert schema_markdown().rstrip() in doc
