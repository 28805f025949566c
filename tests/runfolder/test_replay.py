"""``lth verify --replay N`` (issue 21): sampled networks of a real tiny MNIST study, retrained
from a published folder's config, seeds and masks, give their summary rows bit for bit on the
run's machine; a forged row that every static check accepts fails the replay in one line;
on another kind of CPU the rows are compared within the documented tolerance."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line, real_data
from lth.cli import main
from lth.core.fileio import file_sha256
from lth.runfolder.readers import SummaryRow
from lth.runfolder.verify import VerifyError
from lth.runfolder.verify_published import verify_published
from lth.study.replay import Z, replay, tolerances

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """The tiny run trained on one thread (conftest): so does its replay."""


@pytest.fixture(scope="module")
def published(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "pub"
    assert main(["publish", str(tiny_run), str(out), "--no-report"]) == 0
    return out


@pytest.fixture
def pub(published, tmp_path) -> Path:
    return Path(shutil.copytree(published, tmp_path / "pub"))


def reseal(folder: Path) -> None:
    """published.json's digests rewritten: a forgery consistent for every static check."""
    info = json.loads((folder / "published.json").read_text())
    info["files"] = {name: file_sha256(folder / name) for name in info["files"]}
    (folder / "published.json").write_text(json.dumps(info))


def sampled(line: str) -> list[tuple[str, int, int]]:
    """The networks an ``ok replay`` line names."""
    found = re.findall(r"(\w+)/(\d+)/level (\d+)", line)
    return [(b, int(r), int(lv)) for b, r, lv in found]


def forge_test_acc(folder: Path, delta: float) -> None:
    """Add ``delta`` to every network's final test accuracy in summary.csv and in its last row
    of metrics.csv alike (and to the accuracy at the early stop when that is the last
    evaluation), so that every static check still passes, whichever network a replay draws."""
    summary, metrics = (
        (folder / n).read_text().splitlines() for n in ("summary.csv", "metrics.csv")
    )
    head_s, head_m = summary[0].split(","), metrics[0].split(",")
    last = {}  # network -> index of its last metrics row
    for i, ln in enumerate(metrics[1:], 1):
        last[tuple(ln.split(",")[:3])] = i

    def add(lines, i, header, column):
        cells = lines[i].split(",")
        cells[header.index(column)] = repr(float(cells[header.index(column)]) + delta)
        lines[i] = ",".join(cells)

    for i, ln in enumerate(summary[1:], 1):
        cells = ln.split(",")
        j = last[tuple(cells[:3])]
        add(summary, i, head_s, "test_acc")
        add(metrics, j, head_m, "test_acc")
        es = cells[head_s.index("early_stop_iteration")]
        if float(es) == float(metrics[j].split(",")[head_m.index("iteration")]):
            add(summary, i, head_s, "test_acc_at_early_stop")
    (folder / "summary.csv").write_text("\n".join(summary) + "\n")
    (folder / "metrics.csv").write_text("\n".join(metrics) + "\n")
    reseal(folder)


def test_replay_is_exact_on_the_runs_machine(published, capsys):
    assert main(["verify", str(published), "--replay", "1"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("ok replay: 1 network retrained") and "gives its summary row" in last
    assert "exact" in last, last
    assert len(sampled(last)) == 1


def test_a_forged_summary_row_passes_verify_but_fails_the_replay(pub, capsys):
    forge_test_acc(pub, 0.01)
    verify_published(pub)  # every static check accepts the forgery
    assert main(["verify", str(pub), "--replay", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "check replay failed" in err and "test_acc" in err and "not equal exactly" in err


def test_on_another_cpu_kind_the_rows_are_compared_within_the_tolerance(pub):
    text = (pub / "config.toml").read_text()
    (pub / "config.toml").write_text(re.sub(r'cpu = ".*"', 'cpu = "another CPU"', text))
    forge_test_acc(pub, 0.01)  # within the tolerance: passes elsewhere, not here (above)
    line = replay(pub, 1)[0]
    assert "tolerance" in line and "another CPU" in line
    forge_test_acc(pub, 5.0)  # one replicate: the binomial floor, about 1.4 points
    with pytest.raises(VerifyError) as e:
        replay(pub, 1)
    assert_one_line(e, "check replay failed", "test_acc", "within")


def test_tolerances_follow_the_documented_rule():
    values = [(97.0, 300.0), (97.6, 500.0), (98.2, 400.0)]
    rows = [SummaryRow("ticket", r, 2, 50.0, a, es, a, a) for r, (a, es) in enumerate(values)]
    assert tolerances(rows, ("ticket", 1, 2), 10000, exact=True) == dict.fromkeys(
        ("weights_remaining", "early_stop_iteration", "test_acc", "test_acc_at_early_stop",
         "best_val_acc"), 0.0)  # fmt: skip
    t = tolerances(rows, ("ticket", 1, 2), 10000, exact=False)
    assert t["weights_remaining"] == 0.0
    assert math.isclose(t["test_acc"], Z * math.sqrt(2) * 0.6)  # replicates' std 0.6
    assert math.isclose(t["early_stop_iteration"], Z * math.sqrt(2) * 100.0)
    alone = tolerances(rows[:1], ("ticket", 0, 2), 10000, exact=False)
    assert alone["early_stop_iteration"] is None  # not compared with one replicate
    assert math.isclose(alone["test_acc"], Z * math.sqrt(2) * 100 * math.sqrt(0.97 * 0.03 / 1e4))


def test_late_rewinding_replays_theta_k_from_level_0(tmp_path):
    """Level 1 starts from θk, which only level 0's training gives: the replay retrains level
    0 (its snapshot at k) and then level 1, both bit for bit."""
    run = tmp_path / "late"
    argv = ["run", "--levels", "1", "--iterations", "60", "--eval-every", "30", "--val-size",
            "500", "--rewind-iteration", "30", "--replicates", "1", "--controls", "none",
            "--data-dir", str(real_data("mnist")), "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    line = replay(run, 5)[0]
    assert sampled(line) == [("ticket", 0, 0), ("ticket", 0, 1)] and "exact" in line, line
