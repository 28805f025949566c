"""What lth owns in a run folder (issue 25, items 2 and 3): ``--overwrite`` deletes exactly the
files the manifest lists, while unchanged; the manifest lists every file lth writes (derived
tables, figures, stability and TensorBoard files too); ``lth verify`` fails a current folder
without its manifest.

One real tiny run (real MNIST) with TensorBoard and figures (conftest's session
``tensorboard_run``) and a copy of it with a stability analysis; each test that writes works on
its own copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TENSORBOARD_RUN, TEST_DATA, assert_one_line, copy_run, real_data
from lth.cli import main
from lth.config import ExperimentConfig
from lth.errors import LTHError
from lth.runfolder.layout import OLD_MARKER_TEXT
from lth.runfolder.manifest import RunWriter, check_manifest, folder_id, manifest_lock
from lth.runfolder.runs import RunFolder, read_config

TINY = [*(a for a in TENSORBOARD_RUN if a != "--tensorboard"), "--quiet"]  # the run's settings
OWN = {".lth-run", ".lth/lock", ".lth/manifest.json"}  # the files the manifest cannot list


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def plain(tensorboard_run) -> Path:
    """A real tiny run with TensorBoard event files and its figures (lth run --tensorboard,
    then lth plot again as a user would; conftest: made once per session). Only read here:
    a test that writes works on its copy."""
    return tensorboard_run


@pytest.fixture(scope="module")
def studied(plain, tmp_path_factory) -> Path:
    """A copy of the plain run, then ``lth stability`` of its level-1 ticket (2 copies, 3
    points)."""
    real_data("mnist")
    out = copy_run(plain, tmp_path_factory.mktemp("studied"))
    argv = ["stability", str(out), "--level", "1", "--copies", "2", "--points", "3",
            "--data-dir", str(TEST_DATA), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    return copy_run(run, tmp_path)


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path under ``root``: a file's bytes, a link's target, None for a folder."""
    out: dict[str, bytes | str | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = str(p.readlink()) if p.is_symlink() else p.read_bytes() if p.is_file() else None
    return out


def regular_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def listed(run: Path) -> set[str]:
    return set(json.loads((run / ".lth" / "manifest.json").read_text())["files"])


def overwrite(run: Path) -> None:
    """What ``lth run --out RUN --overwrite`` does to the folder before training."""
    other = ExperimentConfig.from_dict(read_config(run).to_dict() | {"levels": 2})
    with RunFolder(run, other, overwrite=True):
        pass


# -------------------------------------------------------------- the manifest lists everything


def test_the_manifest_lists_every_file_lth_wrote_and_verify_passes(studied, capsys):
    files = regular_files(studied)
    assert listed(studied) == files - OWN
    for rel in ("summary_stats.csv", "analysis.csv", "analysis_histograms.csv",
                "plots/curves.png", "stability/summary.csv", "stability/plots/"
                "instability_vs_weights.png", "stability/ticket_r0_level_01/copy_1_k0.safetensors",
                ".lth/progress.json"):  # fmt: skip
        assert rel in files, rel
    assert any(rel.startswith("tensorboard/events.out.tfevents.") for rel in files)
    assert main(["verify", str(studied)]) == 0
    out = capsys.readouterr().out
    assert f"ok manifest: {len(files - OWN)} files as lth wrote them" in out


@pytest.mark.parametrize(
    "rel",
    ["summary_stats.csv", "analysis.csv", "analysis_histograms.csv", "plots/curves.png",
     "stability/summary.csv", "tensorboard"],
)  # fmt: skip
def test_tampering_with_any_file_lth_wrote_fails_verify(studied, tmp_path, capsys, rel):
    run = copy_of(studied, tmp_path)
    if rel == "tensorboard":
        (path,) = (run / "tensorboard").iterdir()
    else:
        path = run / rel
    data = path.read_bytes()
    if rel.endswith(".csv"):  # one digit of one number, e.g. 93.07 -> 99.07
        i = next(i for i in range(data.index(b"\n"), len(data)) if data[i : i + 1].isdigit())
        data = data[:i] + (b"9" if data[i : i + 1] != b"9" else b"8") + data[i + 1 :]
    else:
        data = data[:-1] + bytes([data[-1] ^ 1])
    path.write_bytes(data)
    assert main(["verify", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "check manifest failed" in err and str(path) in err, err


def test_a_deleted_manifest_fails_verify_when_the_marker_is_current(plain, tmp_path, capsys):
    run = copy_of(plain, tmp_path)
    (run / ".lth" / "manifest.json").unlink()
    assert main(["verify", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "check manifest failed" in err and "deleted" in err, err


def test_a_folder_of_an_older_lth_still_skips_the_manifest(plain, tmp_path, capsys):
    run = copy_of(plain, tmp_path)
    (run / ".lth" / "manifest.json").unlink()
    (run / ".lth-run").write_text(OLD_MARKER_TEXT)  # the marker lth wrote before
    assert main(["verify", str(run)]) == 0
    assert "skipped manifest: the run has no .lth/manifest.json (an older lth)" in (
        capsys.readouterr().out
    )
    (run / ".lth-run").unlink()  # older still: no marker at all
    assert main(["verify", str(run)]) == 0
    assert "skipped manifest" in capsys.readouterr().out


def test_writers_of_other_processes_keep_each_others_entries(plain, tmp_path):
    """Every update of the manifest is a read-modify-write under its lock: a writer that began
    before another one wrote does not drop the other's entry."""
    run = copy_of(plain, tmp_path)
    first, second = RunWriter(run), RunWriter(run)
    first.begin([run / "plots" / "a.png"])
    second.write_files({run / "plots" / "b.png": b"b"})
    first.write(run / "plots" / "a.png", b"a")
    first.end()
    assert {"plots/a.png", "plots/b.png"} <= listed(run)
    assert check_manifest(run) == []
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    sys.exit(3)\n"
    )
    command = [sys.executable, "-c", probe, str(run / ".lth")]
    with manifest_lock(run):  # another process cannot update the manifest meanwhile
        assert subprocess.run(command).returncode == 3
    assert subprocess.run(command).returncode == 0


# ----------------------------------------------------------- --overwrite deletes only lth's


def test_a_copied_marker_does_not_make_a_project_folder_lths(plain, tmp_path, capsys):
    project = tmp_path / "proj"
    user_files = ["config.toml", "summary.csv", "metrics.csv", "layers.csv", "analysis.csv",
                  "plots/curves.png", "ticket/0/level_00/mask.safetensors",
                  ".lth/progress.json"]  # fmt: skip
    for rel in user_files:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plain / rel, project / rel)
    (project / "notes.txt").write_text("mine")
    for marker in ((plain / ".lth-run").read_text(), OLD_MARKER_TEXT):
        (project / ".lth-run").write_text(marker)
        before = snapshot(project)
        argv = ["run", *TINY, "--data-dir", str(TEST_DATA), "--out", str(project), "--overwrite"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--overwrite is unsafe in" in err, err
        assert snapshot(project) == before


def test_overwrite_keeps_the_files_a_user_added_to_a_run_folder(plain, tmp_path):
    run = copy_of(plain, tmp_path)
    tag = folder_id(run)
    mine = {
        "stability/summary.csv": b"analysis,level\n",
        "tensorboard/events.out.tfevents.mine": b"my events",
        "plots/curves.svg": b"<svg/>",
        "plots/curves.pdf": b"%PDF mine",
        "plots/x.pdf": b"%PDF mine too",
        ".summary.csv.abcdefgh.tmp": b"my temporary",
        "ticket/0/level_00/.mask.safetensors.k3j4h5g6.tmp": b"looks like lth's",
        "plots/.curves.a1b2c3d4.png.tmp": b"so does this",
        ".x.abcdefgh.tmp": b"and this",
    }
    for rel, content in mine.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(content)
    ours = run / "ticket" / "0" / "level_01" / f".final.safetensors.{tag}-0123abcd.tmp"
    ours.write_bytes(b"a temporary lth left")
    lths = listed(run)
    overwrite(run)
    left = regular_files(run)
    assert set(mine) <= left and all((run / r).read_bytes() == c for r, c in mine.items())
    assert not ours.exists()
    assert left - set(mine) == OWN | {"config.toml"}  # every file lth wrote is gone
    assert lths - {"config.toml"} and not (lths - {"config.toml"}) & left
    assert not (run / "reinit").exists() and not (run / "ticket" / "0" / "level_01").exists()


def test_a_changed_file_of_lths_is_kept_and_named(plain, tmp_path):
    run = copy_of(plain, tmp_path)
    changed = run / "summary_stats.csv"
    changed.write_text(changed.read_text().replace(",", ";", 1))
    before = snapshot(run)
    with pytest.raises(LTHError) as info:
        overwrite(run)
    assert_one_line(info, "--overwrite refused", changed, "was changed after lth wrote it")
    assert snapshot(run) == before


def test_a_symbolic_link_in_the_run_is_left_alone_and_named(plain, tmp_path):
    run = copy_of(plain, tmp_path)
    outside = tmp_path / "elsewhere"
    shutil.move(run / "reinit", outside)
    (run / "reinit").symlink_to(outside)
    before, there = snapshot(run), snapshot(outside)
    with pytest.raises(LTHError) as info:
        overwrite(run)
    assert_one_line(info, "--overwrite refused", run / "reinit", "symbolic link")
    assert snapshot(run) == before and snapshot(outside) == there


def test_overwrite_without_a_manifest_is_refused(plain, tmp_path):
    run = copy_of(plain, tmp_path)
    (run / ".lth" / "manifest.json").unlink()
    before = snapshot(run)
    with pytest.raises(LTHError) as info:
        overwrite(run)
    assert_one_line(info, "--overwrite is unsafe in", "manifest.json is missing", "--out")
    assert snapshot(run) == before
    with pytest.raises(LTHError, match="has no .lth/manifest.json although its .lth-run"):
        RunFolder(run, read_config(run)).open()  # nor is it resumed: its files are unknown
    assert snapshot(run) == before
