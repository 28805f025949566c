"""The command line before any work: ``lth --help`` and the help of the commands without
registry options start without torch (the registries' names are filled in only when a help
that lists them is printed), and a refusal of user code names only options the command has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line
from lth.cli import build_parser, main
from lth.cli.options import code_trust
from lth.cli.parser import parse_args
from lth.errors import LTHError

SRC = Path(__file__).resolve().parents[1] / "src"
NO_REGISTRY = ("report", "plot", "verify", "export", "sweep")  # no --model etc. to list


def test_building_the_parser_and_printing_help_never_imports_torch():
    code = (
        "import contextlib, io, sys\n"
        "from lth.cli import main\n"
        "from lth.cli.parser import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'building the parser imported torch'\n"
        f"for argv in [['--help'], *[[c, '--help'] for c in {NO_REGISTRY!r}]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        assert main(argv) == 0, argv\n"
        "    assert out.getvalue().startswith('usage: lth'), argv\n"
        "    assert 'torch' not in sys.modules, f'lth {argv} imported torch'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("command", ["run", "stability"])
def test_a_help_that_lists_the_registries_still_lists_them(command, capsys):
    from lth.core.models import model_names
    from lth.pruning.controls import control_help
    from lth.pruning.criteria import criterion_names

    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "{registered:" not in text
    assert "registered: " + ", ".join(model_names()) + " (default" in text
    assert "registered: " + ", ".join(criterion_names()) + " (default" in text
    controls = "; ".join(f"{n}: {w}" for n, w in control_help().items())
    assert "registered: " + " ".join(controls.split()) + " (default" in text


def options_of(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


@pytest.mark.parametrize(
    "argv, options",
    [
        (["run"], {"model", "criterion"}),
        (["stability", "--find-rewind", "--out", "x"], {"model", "criterion"}),  # a configuration
        # the run folder's config.toml names the code; --model rebuilds a module object's run
        (["stability", "RUN", "--level", "1"], {"model"}),
        (["sweep", "s.toml", "--out", "x"], set()),
        (["export", "RUN", "--level", "1", "--format", "dense", "--out", "t"], {"model"}),
    ],
)
@pytest.mark.parametrize("what", ["model", "criterion"])
def test_a_refusal_names_only_options_the_command_has(argv, options, what):
    trust = code_trust(parse_args(build_parser(), argv))
    with pytest.raises(LTHError) as exc:
        trust.check("mylab.code:fn", what)
    msg = assert_one_line(exc, "mylab.code:fn", "--trust-code")
    named = set(re.findall(r"--[a-z][a-z-]*", msg))
    assert named <= options_of(argv[0]), (named, argv)
    assert (f"--{what}" in named) == (what in options), msg


def test_lth_sweep_refuses_code_its_file_names_with_what_sweep_takes(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('criterion = "mylab.prune:score"\nlevels = 1\n[vary]\nrate = [0.5]\n')
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'mylab.prune:score'" in err and "--trust-code" in err, err
    assert "--criterion" not in err and "--model" not in err, err
    assert not (tmp_path / "out").exists()
