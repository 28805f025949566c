"""Level 0 is the dense network, trained once per replicate: the controls start at level 1.

At level 0 nothing is pruned yet, so ``random_prune`` would be the ticket itself and ``reinit``
one more dense seed. A study trains the ticket alone there; ``lth verify`` accepts that shape
(and the level-0 controls an older lth wrote, all or none); resume is bit-identical.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from helpers import reseal
from lth.core.training import TicketJob
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.pruning.masks import masked_weights
from lth.runfolder.layout import level_branches
from lth.runfolder.runs import RunFolder, load_ticket
from lth.runfolder.verify import VerifyError, verify_run
from lth.study.experiment import Experiment, ExperimentConfig

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

CONTROLS = ("reinit", "random_prune", "shuffle_init")
CONFIG = ExperimentConfig(
    levels=2, iterations=20, eval_every=10, batch_size=20, val_size=100, max_parallel=2,
    replicates=2, controls=CONTROLS,
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 1, 8, 8, generator=g)
    y = (x.flatten(1) @ torch.randn(64, 10, generator=g)).argmax(1)
    return dataset_from_tensors("toy", x[:450], y[:450], x[450:], y[450:], val_size=100)


def run_study(path, data, experiment=Experiment, hook=None, **kw):
    with RunFolder(path, CONFIG, **kw) as folder:
        return experiment(CONFIG, data).run(folder, hook)


def summary_rows(run: Path) -> list[dict]:
    with open(run / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def result_files(root: Path) -> dict[str, bytes]:
    """Every result file of a run folder (lth's own state and the marker excluded)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in (".lth", ".lth-run")
    }


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("level-zero") / "run"
    return path, run_study(path, data)


class Crash(Exception):
    """Stops a study in the middle, as a kill would."""


class OlderLth(Experiment):
    """The level loop of an older lth: the controls trained at level 0 too (``random_prune``
    there shared the ticket's result, every other control trained), or only ``only`` of them."""

    only: tuple[str, ...] = CONTROLS

    def plan(self, level, previous, level0):
        planned = super().plan(level, previous, level0)
        if level:
            return planned
        out = []
        for branch, r, job in planned:
            out.append((branch, r, job))
            start = dict(job.init)
            for name in self.only:
                if name == "random_prune":
                    out.append((name, r, None))
                    continue
                mask, init = self.control(name, r, 0, job.masks, start, start, (start, job.masks))
                trained = TicketJob(masked_weights(init, mask), mask, job.seed, f"{name}/{r}")
                out.append((name, r, trained))
        return out


def test_level_branches_are_the_ticket_alone_at_level_0():
    assert level_branches(CONTROLS, 0) == ("ticket",)
    assert level_branches(CONTROLS, 1) == ("ticket", *CONTROLS)
    assert level_branches((), 3) == ("ticket",)


def test_one_level_0_row_per_replicate_and_every_control_from_level_1(reference):
    run, results = reference
    rows = summary_rows(run)
    counts = Counter((r["branch"], int(r["level"])) for r in rows)
    assert counts == {
        ("ticket", 0): 2,
        **{(b, lv): 2 for b in ("ticket", *CONTROLS) for lv in (1, 2)},
    }
    assert [(r.branch, r.level) for r in results if r.level == 0] == [("ticket", 0)] * 2
    assert sorted({r["replicate"] for r in rows if r["level"] == "0"}) == ["0", "1"]
    # no files of a control at level 0, and load_ticket says why
    for control in CONTROLS:
        assert not list(run.glob(f"{control}/*/level_00"))
        assert sorted(p.name for p in run.glob(f"{control}/0/level_*")) == ["level_01", "level_02"]
    with pytest.raises(LTHError, match="controls start at level 1"):
        load_ticket(run, level=0, branch="reinit", model=torch.nn.Sequential())
    with open(run / "metrics.csv", newline="") as f:
        metrics = {(r["branch"], r["level"]) for r in csv.DictReader(f)}
    assert {b for b, lv in metrics if lv == "0"} == {"ticket"}


def test_verify_passes_on_the_new_shape(reference):
    lines = verify_run(reference[0])
    assert "ok files: 18 networks with their mask, init and final" in lines
    # the controls' own checks ran at every level >= 1 (2 replicates x 2 levels each)
    assert any(line.startswith("ok reinit-control: 4 ") for line in lines), lines


def test_verify_refuses_a_missing_control_at_level_1(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    kept = [r for r in summary_rows(run) if not (r["branch"] == "reinit" and r["level"] == "1"
                                                 and r["replicate"] == "1")]  # fmt: skip
    with open(run / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    reseal(run)
    with pytest.raises(VerifyError, match="check files failed: reinit replicate 1 level 1"):
        verify_run(run)


def test_an_older_lths_run_with_level_0_controls_verifies_and_resumes(data, tmp_path):
    """A run folder an older lth wrote, with every control at level 0: verify checks those
    rows too, and the new lth resumes it (its level 0 as it is on disk)."""
    old = tmp_path / "old"

    def crash(level, group, trainer):
        if level == 1:
            raise Crash

    with pytest.raises(Crash):
        run_study(old, data, OlderLth, hook=crash, checkpoint_seconds=0)
    level0 = Counter(r["branch"] for r in summary_rows(old) if r["level"] == "0")
    assert level0 == dict.fromkeys(("ticket", *CONTROLS), 2)
    results = run_study(old, data)  # the new lth goes on from level 1
    assert sum(r.level == 0 for r in results) == 8
    lines = verify_run(old)
    assert "ok files: 24 networks with their mask, init and final" in lines


def test_verify_refuses_level_0_controls_of_an_older_lth_when_one_is_missing(data, tmp_path):
    class Partial(OlderLth):
        only = ("reinit",)

    run = tmp_path / "run"
    run_study(run, data, Partial)
    with pytest.raises(VerifyError, match="random_prune replicate 0 level 0: no row"):
        verify_run(run)


def test_resume_mid_level_1_is_bit_identical(reference, data, tmp_path):
    path = tmp_path / "run"
    seen = []

    def crash(level, group, trainer):
        seen.append((level, group, trainer.iteration))
        if (level, group, trainer.iteration) == (1, 1, 10):
            raise Crash

    with pytest.raises(Crash):
        run_study(path, data, hook=crash, checkpoint_seconds=0)
    assert (path / ".lth" / "level_01_group_01.pt").is_file()
    assert not (path / ".lth" / "level_00_group_00.pt").exists()  # level 0 finished
    run_study(path, data)
    assert result_files(path) == result_files(reference[0])
    verify_run(path)
