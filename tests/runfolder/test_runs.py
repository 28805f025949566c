"""Tests for lth.runfolder.runs: atomic writes, the run folder as a Store, resume, lock,
load_ticket.

Uses a small synthetic 28x28 dataset so that a whole study takes well under a second.
"""

import errno
import fcntl
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from helpers import CONFIG
from lth.core.fileio import atomic_write, file_sha256, load_tensors, save_tensors
from lth.data import dataset_from_tensors
from lth.errors import LTHError
from lth.runfolder.csvio import csv_text, to_int
from lth.runfolder.layout import OLD_MARKER_TEXT
from lth.runfolder.manifest import Manifest, RunWriter, check_manifest, folder_id
from lth.runfolder.runs import RunFolder, load_ticket, read_config, toml_text
from lth.runfolder.tables import LAYERS, METRICS, SUMMARY
from lth.study.experiment import Experiment, ExperimentConfig


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 1, 28, 28, generator=g)
    w = torch.randn(784, 10, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    return dataset_from_tensors("mnist", x[:500], y[:500], x[500:], y[500:], val_size=100)


def run_study(path, data, config=CONFIG, hook=None, **kw):
    with RunFolder(path, config, **kw) as folder:
        return Experiment(config, data).run(folder, hook)


def files(root: Path) -> dict[str, bytes]:
    """Every result file of a run folder (plots, internal state and the marker, which holds
    the folder's own id, excluded) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in (".lth", "plots", ".lth-run")
    }


def reseal(run: Path) -> None:
    """Record a run folder's listed files as they are now, as if lth had written them so."""
    manifest = Manifest.load(run)
    manifest.files = {r: file_sha256(run / r) for r in manifest.files if (run / r).is_file()}
    manifest.save()


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "run"
    results = run_study(path, data)
    return path, results


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_failure_keeps_old_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    atomic_write(target, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write(target, "new content")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.txt", "one")
        save_tensors(tmp_path / "t.safetensors", {"w": torch.ones(2)})
        atomic_write(tmp_path / "a.txt", "two")  # replacing keeps following it
    finally:
        os.umask(old)
    for name in ("a.txt", "t.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_tensors_roundtrip_bool_and_float(tmp_path):
    t = {"m": torch.tensor([True, False]), "w": torch.tensor([-0.0, 1.5])}
    save_tensors(tmp_path / "t.safetensors", t)
    back = load_tensors(tmp_path / "t.safetensors")
    assert back["m"].dtype == torch.bool and back["m"].tolist() == [True, False]
    assert torch.equal(back["w"].view(torch.int32), t["w"].view(torch.int32))  # -0.0 kept
    with pytest.raises(LTHError, match="missing"):
        load_tensors(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(LTHError, match="not a readable safetensors"):
        load_tensors(tmp_path / "bad.safetensors")


def test_csv_and_toml_text_are_exact():
    text = csv_text([{"branch": "ticket", "val_loss": 0.1 + 0.2, "test_acc": None}], METRICS)
    header, row = text.splitlines()
    assert header.split(",") == METRICS.names
    assert "0.30000000000000004" in row
    values = CONFIG.to_dict() | {"environment": {"device": "cpu", "data_dir": 'a "b"'}}
    import tomllib

    assert tomllib.loads(toml_text(values)) == values


def test_whole_number_cells_are_read_exactly():
    big = 2**63 - 25  # a 63-bit seed: a float would round it
    assert to_int(str(big)) == big and to_int("3.0") == 3 and to_int(" 7 ") == 7
    for bad in ("3.5", "x", ""):
        with pytest.raises(ValueError):
            to_int(bad)


# ---------------------------------------------------------------- store, resume, checkpoints


def test_folder_layout_and_config(reference):
    path, results = reference
    assert read_config(path) == CONFIG
    assert json.loads((path / ".lth" / "progress.json").read_text()) == {"levels_done": 2}
    assert not list((path / ".lth").glob("*.pt"))  # checkpoints of finished levels are gone
    for r in results:
        folder = path / r.branch / str(r.replicate) / f"level_{r.level:02d}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "final.safetensors",
            "init.safetensors",
            "mask.safetensors",
        ]
        for name, m in load_tensors(folder / "mask.safetensors").items():
            assert torch.equal(m, r.masks[name])
        for name, w in load_tensors(folder / "final.safetensors").items():
            assert torch.equal(w, r.final[name])
    summary = (path / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 1 + 3 * 2  # level 0: the dense network alone
    for table in (METRICS, SUMMARY, LAYERS):  # the columns declared in lth.runfolder.tables
        assert (path / table.file).read_text().splitlines()[0] == ",".join(table.names)
    assert (path / ".lth-run").is_file()


def test_reopen_loads_finished_levels_without_training(reference, data):
    path, results = reference

    def must_not_train(level, group, trainer):
        raise AssertionError("a finished level was trained again")

    before = files(path)
    again = run_study(path, data, hook=must_not_train)
    assert files(path) == before
    assert [(r.branch, r.level) for r in again] == [(r.branch, r.level) for r in results]
    for a, b in zip(again, results):
        assert all(torch.equal(a.final[k], b.final[k]) for k in b.final)
        assert all(torch.equal(a.init[k], b.init[k]) for k in b.init)
        assert a.history.val_loss == b.history.val_loss
        assert a.history.iteration == b.history.iteration
        assert a.summary() == b.summary()


class Crash(Exception):
    pass


@pytest.mark.parametrize("at", [(0, 0, 20), (1, 1, 10), (2, 1, 0)])
def test_resume_from_in_level_checkpoint_is_bit_identical(reference, data, tmp_path, at):
    ref_path, _ = reference
    path = tmp_path / "run"

    def crash(level, group, trainer):
        if (level, group, trainer.iteration) == at:
            raise Crash

    with pytest.raises(Crash):
        run_study(path, data, hook=crash, checkpoint_seconds=0)
    level, group, _ = at
    assert (path / ".lth" / f"level_{level:02d}_group_{group:02d}.pt").exists()
    resumed_from = []

    class Spy(RunFolder):
        def load_checkpoint(self, level, group):
            state = super().load_checkpoint(level, group)
            if state is not None:
                resumed_from.append((level, group, state["iteration"]))
            return state

    with Spy(path, CONFIG) as folder:
        Experiment(CONFIG, data).run(folder)
    assert resumed_from and resumed_from[-1] == at
    assert files(path) == files(ref_path)


def test_resume_keeps_the_grouping_the_level_started_with(reference, data, tmp_path, monkeypatch):
    """Group size follows the machine (threads, memory): a resume elsewhere must not regroup."""
    ref_path, _ = reference
    path = tmp_path / "run"

    def crash(level, group, trainer):
        if (level, group, trainer.iteration) == (1, 0, 10):
            raise Crash

    with pytest.raises(Crash):
        run_study(path, data, hook=crash, checkpoint_seconds=0)
    sizes = []

    def spy(level, group, trainer):
        sizes.append((level, group, trainer.k))

    monkeypatch.setattr(Experiment, "group_size", lambda self: 1)  # a smaller machine
    run_study(path, data, hook=spy)
    assert (1, 0, 2) in sizes, "level 1 resumed in its original groups of 2"
    assert (2, 0, 1) in sizes, "level 2 started after the resume uses the new size"
    # (Level 2's weights may or may not differ from the reference's: whether one ticket
    # trained alone and two trained together round alike depends on the CPU's kernels.)
    for name, content in files(ref_path).items():  # levels 0 and 1 are bit-identical
        if "level_02" not in name and not name.endswith(".csv"):
            assert files(path)[name] == content, name


def test_checkpoint_of_other_tickets_is_refused(data, tmp_path):
    path = tmp_path / "run"

    def crash(level, group, trainer):
        if (level, group, trainer.iteration) == (1, 1, 10):
            raise Crash

    with pytest.raises(Crash):
        run_study(path, data, hook=crash, checkpoint_seconds=0)
    # group 1's checkpoint where group 0's should be: other tickets
    (path / ".lth" / "level_01_group_01.pt").replace(path / ".lth" / "level_01_group_00.pt")
    reseal(path)
    with pytest.raises(LTHError, match="holds other tickets"):
        run_study(path, data)


def test_late_rewinding_resumes_bit_identically(data, tmp_path):
    config = ExperimentConfig.from_dict(CONFIG.to_dict() | {"rewind_iteration": 10})
    ref = tmp_path / "ref"
    run_study(ref, data, config)
    assert (ref / "ticket" / "0" / "level_00" / "step_10.safetensors").exists()
    theta_k = load_tensors(ref / "ticket" / "0" / "level_00" / "step_10.safetensors")
    init = load_tensors(ref / "ticket" / "0" / "level_02" / "init.safetensors")
    mask = load_tensors(ref / "ticket" / "0" / "level_02" / "mask.safetensors")
    assert all(torch.equal(init[n][m], theta_k[n][m]) for n, m in mask.items())
    path = tmp_path / "run"
    for at in [(0, 0, 20), (1, 1, 10)]:

        def crash(level, group, trainer, at=at):
            if (level, group, trainer.iteration) == at:
                raise Crash

        with pytest.raises(Crash):
            run_study(path, data, config, hook=crash, checkpoint_seconds=0)
    run_study(path, data, config)
    assert files(path) == files(ref)


def test_damaged_folder_is_reported(reference, data, tmp_path):
    path = tmp_path / "run"
    run_study(path, data)
    summary = path / "summary.csv"
    summary.write_text(summary.read_text().splitlines()[0] + "\n")
    with pytest.raises(LTHError, match="summary.csv was changed after lth wrote it.*--overwrite"):
        RunFolder(path, CONFIG).open()
    manifest = path / ".lth" / "manifest.json"
    manifest.unlink()  # as in a run folder of an older lth: the files are taken as they are
    (path / ".lth-run").write_text(OLD_MARKER_TEXT)
    with pytest.raises(LTHError, match="lacks results of level 0.*--overwrite"):
        RunFolder(path, CONFIG).open()
    summary.unlink()
    with pytest.raises(LTHError, match="summary.csv not found; start over"):
        RunFolder(path, CONFIG).open()
    assert not manifest.exists()  # a failed open saves nothing
    (path / ".lth" / "progress.json").write_text("{")
    with pytest.raises(LTHError, match="cannot read .*progress.json"):
        RunFolder(path, CONFIG).open()
    manifest.write_text("{")
    with pytest.raises(LTHError, match="cannot read .*manifest.json"):
        RunFolder(path, CONFIG).open()
    with pytest.raises(LTHError, match="--overwrite is unsafe in .*manifest.json cannot be read"):
        RunFolder(path, CONFIG, overwrite=True).open()
    with RunFolder(tmp_path / "other", CONFIG) as folder:  # the way out: another --out
        assert folder.levels_done == -1


@pytest.mark.parametrize("other_bytes", [False, True])
def test_crash_while_saving_a_level_resumes_bit_identically(
    reference, data, tmp_path, monkeypatch, other_bytes
):
    """Also when the kill left files holding bytes the manifest never saw (``other_bytes``):
    files being rewritten are not taken for files changed behind lth's back."""
    ref_path, _ = reference
    path = tmp_path / "run"
    original = RunFolder.write_tables
    calls = []

    def failing(self):
        calls.append(1)
        if len(calls) == 2:  # level 1: weights written, tables and progress not
            if other_bytes:  # as an earlier attempt of the level would have left them
                level = path / "ticket" / "0" / "level_01"
                save_tensors(level / "mask.safetensors", {"x": torch.zeros(3, dtype=torch.bool)})
                table = (path / "summary.csv").read_text()
                cells = "," * (len(SUMMARY.columns) - 3)
                atomic_write(path / "summary.csv", table + "ticket,0,1" + cells + "\n")
            raise OSError(errno.ENOSPC, "No space left on device", "summary.csv")
        original(self)

    monkeypatch.setattr(RunFolder, "write_tables", failing)
    with pytest.raises(OSError):
        run_study(path, data)
    monkeypatch.setattr(RunFolder, "write_tables", original)
    assert json.loads((path / ".lth" / "progress.json").read_text()) == {"levels_done": 0}
    manifest = json.loads((path / ".lth" / "manifest.json").read_text())
    assert "ticket/0/level_01/mask.safetensors" in manifest["writing"]
    run_study(path, data)
    assert files(path) == files(ref_path)
    assert check_manifest(path) == []
    assert json.loads((path / ".lth" / "manifest.json").read_text())["writing"] == []


def test_rows_of_an_unfinished_level_are_dropped_on_resume(reference, data, tmp_path):
    ref_path, _ = reference
    path = tmp_path / "run"
    run_study(path, data)
    # as if killed after the tables of level 2 were written but before its progress marker
    atomic_write(path / ".lth" / "progress.json", json.dumps({"levels_done": 1}))
    reseal(path)
    with RunFolder(path, CONFIG) as folder:
        assert folder.levels_done == 1
        assert {int(r["level"]) for r in folder.rows["summary"]} == {0, 1}
        assert folder.load_level(2) is None
        Experiment(CONFIG, data).run(folder)
    assert files(path) == files(ref_path)


def test_a_checkpoint_left_by_a_kill_after_its_level_finished_is_removed(data, tmp_path):
    path = tmp_path / "run"
    run_study(path, data)
    # as if killed after level 1's progress marker but before its checkpoints were deleted
    stale = path / ".lth" / "level_01_group_00.pt"
    torch.save({"stale": True}, stale)
    RunWriter(path).record([stale])  # lth wrote it (and recorded it)
    lookalike = path / ".lth" / "level_01_group_01.pt"  # lth did not write this one
    torch.save({"mine": True}, lookalike)
    with RunFolder(path, CONFIG) as folder:
        assert folder.levels_done == 2
    assert not stale.exists() and lookalike.exists()
    assert check_manifest(path) == []


def test_stale_temporaries_are_removed_on_open(reference, tmp_path):
    """Only temporaries named with the folder's id (which lth alone makes) are lth's."""
    path = tmp_path / "run"
    shutil.copytree(reference[0], path)
    tag = folder_id(path)
    assert tag is not None
    stale = [
        path / "ticket" / "0" / "level_01" / f".mask.safetensors.{tag}-0a1b2c3d.tmp",
        path / "plots" / f".curves.png.{tag}-a1b2c3d4.tmp",  # a kill while drawing
        path / f".summary.csv.{tag}-0f9e8d7c.tmp",
        path / ".lth" / f".progress.json.{tag}-12ab34cd.tmp",
    ]
    keep = [
        path / "notes.tmp1",
        path / ".notes.tmp",
        path / "plots" / "draft.tmp",
        path / "ticket" / "0" / "level_01" / ".final.safetensors.tmp12345",  # look-alikes
        path / "ticket" / "0" / "level_01" / ".mask.safetensors.k3j4h5g6.tmp",
        path / ".summary.csv.0f9e8d7c.tmp",
        path / "mine" / ".notes.txt.abcdefgh.tmp",
        path / f".summary.csv.{tag}-0f9e8d7c.tmp.mine",
    ]
    for p in stale + keep:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f".final.safetensors.{tag}-99999999.tmp").write_bytes(b"not in the run folder")
    (path / "linked").symlink_to(outside)  # a linked folder is not followed
    with RunFolder(path, CONFIG):
        pass
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in keep)
    assert (outside / f".final.safetensors.{tag}-99999999.tmp").exists()


def test_checkpoint_interval(data, tmp_path, monkeypatch):
    import lth.runfolder.manifest

    written = []
    original = lth.runfolder.manifest.atomic_write

    def spy(path, payload, tag=None):
        if Path(path).suffix == ".pt":
            written.append(Path(path).name)
        original(path, payload, tag)

    monkeypatch.setattr(lth.runfolder.manifest, "atomic_write", spy)
    config = ExperimentConfig.from_dict(CONFIG.to_dict() | {"levels": 0, "controls": []})
    run_study(tmp_path / "a", data, config, checkpoint_seconds=3600)
    assert written == []
    progress = []

    def hook(level, group, trainer):
        progress.append((trainer.iteration, len(written)))

    run_study(tmp_path / "b", data, config, hook=hook, checkpoint_seconds=0)
    # a checkpoint at every evaluation but the last (the finished level is saved instead)
    assert progress == [(0, 1), (10, 2), (20, 3), (30, 3)]
    assert set(written) == {"level_00_group_00.pt"}
    assert not list((tmp_path / "b" / ".lth").glob("*.pt"))


# ------------------------------------------------------------------ refusing bad folders


def test_second_process_is_refused_by_the_lock(reference, tmp_path):
    path = tmp_path / "run"
    with RunFolder(path, CONFIG), pytest.raises(LTHError, match="another lth process is using"):
        RunFolder(path, CONFIG).open()
    with RunFolder(path, CONFIG):  # released on close
        pass
    with open(path / ".lth" / "lock", "a") as held:  # as another process would hold it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LTHError, match="another lth process"):
            RunFolder(path, CONFIG).open()


def test_other_settings_are_refused_and_named(reference, data, tmp_path):
    path = tmp_path / "run"
    run_study(path, data)
    before = files(path)
    other = ExperimentConfig.from_dict(CONFIG.to_dict() | {"levels": 3, "lr": 0.01})
    with pytest.raises(LTHError) as info:
        RunFolder(path, other).open()
    message = str(info.value)
    assert "levels (2 -> 3)" in message and "lr (0.0012 -> 0.01)" in message
    assert "--overwrite" in message and "\n" not in message
    assert files(path) == before
    with RunFolder(path, other, overwrite=True) as folder:
        assert folder.levels_done == -1
    assert sorted(files(path)) == ["config.toml"] and (path / ".lth-run").is_file()
    assert read_config(path) == other


def test_overwrite_deletes_only_what_lth_wrote(reference, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(reference[0], path)
    mine = {
        "thesis.tex": b"precious",
        "code/train.py": b"print()",
        "ticket/notes.txt": b"about the ticket",
        "ticket/0/level_01/comments.md": b"look here",
        "plots/sketch.svg": b"<svg/>",
        "plots/curves.png": b"my figure, at a name lth uses",  # lth never wrote it here
        "analysis.csv": b"x\n",
        ".lth/my-notes": b"mine too",
    }
    for rel, content in mine.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(content)
    outside = tmp_path / "outside"
    (outside / "0" / "level_00").mkdir(parents=True)
    (outside / "0" / "level_00" / "mask.safetensors").write_bytes(b"not lth's to delete")
    (path / "random_prune" / "7").symlink_to(outside / "0")  # links lth never wrote through
    (path / "data").symlink_to(outside)
    other = ExperimentConfig.from_dict(CONFIG.to_dict() | {"levels": 1})
    with RunFolder(path, other, overwrite=True) as folder:
        assert folder.levels_done == -1
    left = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() or p.is_symlink()}
    assert left == {
        ".lth-run",
        ".lth/lock",
        ".lth/manifest.json",
        "config.toml",
        *mine,
        "random_prune/7",
        "data",
    }
    for rel, content in mine.items():
        assert (path / rel).read_bytes() == content
    assert (outside / "0" / "level_00" / "mask.safetensors").exists()
    assert not (path / "reinit").exists()  # emptied folders lth made are removed
    assert read_config(path) == other
    assert set(json.loads((path / ".lth" / "manifest.json").read_text())["files"]) == {
        "config.toml"
    }


def test_overwrite_refuses_a_folder_without_the_marker(reference, data, tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    (path / "config.toml").write_text((reference[0] / "config.toml").read_text())
    (path / "thesis.tex").write_text("precious")
    (path / "code").mkdir()
    (path / "code" / "a.py").write_text("x = 1")
    before = {p: p.read_bytes() if p.is_file() else None for p in path.rglob("*")}
    with pytest.raises(LTHError) as info:
        RunFolder(path, CONFIG, overwrite=True).open()
    message = str(info.value)
    assert "--overwrite refused" in message and ".lth-run" in message and "\n" not in message
    assert {p: p.read_bytes() if p.is_file() else None for p in path.rglob("*")} == before

    # a run folder of an older lth (no marker, no manifest): refused too, but it resumes
    old = tmp_path / "old"
    shutil.copytree(reference[0], old)
    (old / ".lth-run").unlink()
    (old / ".lth" / "manifest.json").unlink()
    with pytest.raises(LTHError, match="--overwrite refused"):
        RunFolder(old, CONFIG, overwrite=True).open()
    with RunFolder(old, CONFIG) as folder:
        assert folder.levels_done == 2
    assert (old / ".lth-run").is_file() and check_manifest(old) == []
    with RunFolder(old, CONFIG, overwrite=True) as folder:  # adopted: now it may be cleared
        assert folder.levels_done == -1


def test_bad_paths_are_refused_without_touching_anything(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LTHError, match="is a file"):
        RunFolder(a_file, CONFIG).open()
    with pytest.raises(LTHError, match="is a file"):
        RunFolder(a_file / "sub", CONFIG).open()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(LTHError, match="not an lth run folder"):
            RunFolder(foreign, CONFIG, overwrite=overwrite).open()
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]


# ----------------------------------------------------------------------------- manifest


def test_a_changed_file_is_refused_on_resume(reference, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(reference[0], path)
    assert check_manifest(path) == []
    manifest = json.loads((path / ".lth" / "manifest.json").read_text())
    assert set(manifest["files"]) == {*files(path), ".lth/progress.json"}  # every file
    mask = path / "ticket" / "0" / "level_01" / "mask.safetensors"
    good = mask.read_bytes()
    mask.write_bytes((path / "ticket" / "0" / "level_02" / "mask.safetensors").read_bytes())
    with pytest.raises(LTHError) as info:
        RunFolder(path, CONFIG).open()
    message = str(info.value)
    assert f"{mask} was changed after lth wrote it" in message and "\n" not in message
    (problem,) = check_manifest(path)
    assert str(mask) in problem
    mask.write_bytes(good)
    (path / "ticket" / "0" / "level_00" / "final.safetensors").unlink()
    with pytest.raises(LTHError, match="level_00/final.safetensors is missing"):
        RunFolder(path, CONFIG).open()
    (path / ".lth" / "manifest.json").unlink()
    with pytest.raises(LTHError, match="has no .lth/manifest.json"):
        check_manifest(path)


# --------------------------------------------------------------------- older run folders


def _old_nan_spelling(path: Path) -> int:
    """Rewrite a run's tables as lth wrote them before: NaN as ``nan`` (None stayed empty);
    return how many cells changed."""
    changed = 0
    for table in (METRICS, SUMMARY, LAYERS):
        lines = (path / table.file).read_text().splitlines()
        floats = {i for i, c in enumerate(table.columns) if c.kind is float}
        out = [lines[0]]
        for line in lines[1:]:
            cells = line.split(",")
            for i in floats:
                if cells[i] == "":
                    cells[i] = "nan"
                    changed += 1
            out.append(",".join(cells))
        (path / table.file).write_text("\n".join(out) + "\n")
    return changed


def test_a_run_folder_in_the_old_nan_spelling_reads_reports_and_resumes(reference, data, tmp_path):
    from lth.analysis.plots import plot_runs
    from lth.analysis.report import report

    ref_path, results = reference
    path = tmp_path / "old" / "run"  # the same folder name: the report's title is the same
    shutil.copytree(ref_path, path)
    (path / ".lth-run").unlink()  # an older lth wrote neither the marker nor the manifest
    (path / ".lth" / "manifest.json").unlink()
    assert _old_nan_spelling(path) >= 3  # train_loss at iteration 0 of every network
    assert ",nan," in (path / "metrics.csv").read_text()

    for fmt in ("table", "md", "csv"):
        assert report(path, fmt) == report(ref_path, fmt)
    old, new = plot_runs([path], formats=()), plot_runs([ref_path], formats=())
    for name in ("accuracy_vs_weights", "curves", "early_stop"):
        for a, b in zip(old[name].axes, new[name].axes):
            assert [ln.get_xydata().tolist() for ln in a.get_lines()] == [
                ln.get_xydata().tolist() for ln in b.get_lines()
            ]

    def must_not_train(level, group, trainer):
        raise AssertionError("a finished level was trained again")

    again = run_study(path, data, hook=must_not_train)  # resumes: every level is finished
    for a, b in zip(again, results):
        assert a.summary() == pytest.approx(b.summary(), nan_ok=True)
        assert a.history.train_loss == pytest.approx(b.history.train_loss, nan_ok=True)
    # a resume that trains again rewrites the tables in one spelling, bit-identical to now
    atomic_write(path / ".lth" / "progress.json", json.dumps({"levels_done": 1}))
    reseal(path)
    run_study(path, data)
    assert files(path) == files(ref_path)
    assert ",nan," not in (path / "metrics.csv").read_text()


# ----------------------------------------------------------------------------- load_ticket


def test_load_ticket(reference, data):
    path, results = reference
    for r in results:
        model, masks = load_ticket(path, r.level, r.branch, r.replicate)
        params = dict(model.named_parameters())
        assert all(torch.equal(params[k], r.final[k]) for k in r.final)
        assert all(torch.equal(masks[k], r.masks[k]) for k in r.masks)
        start, _ = load_ticket(path, r.level, r.branch, r.replicate, which="init")
        assert all(torch.equal(p, r.init[k]) for k, p in start.named_parameters())
        with torch.no_grad():  # the loaded model computes what training reported
            acc = (model(data.test_x).argmax(1) == data.test_y).double().mean().item() * 100
        assert acc == pytest.approx(r.history.test_acc[-1], abs=0.51)
    for kwargs, match in [
        ({"level": 3}, "levels 0 to 2"),
        ({"level": 0, "branch": "lottery"}, "ticket, reinit, random_prune"),
        ({"level": 0, "replicate": 1}, "replicates 0 to 0"),
        ({"level": 0, "which": "best"}, "final, init"),
    ]:
        with pytest.raises(LTHError, match=match):
            load_ticket(path, **kwargs)
    with pytest.raises(LTHError, match="not an lth run folder"):
        load_ticket(path / "ticket", 0)
