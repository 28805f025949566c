"""Published folders (issue 21): ``lth publish`` writes a run's small files and its masks,
bit-packed; ``lth verify`` audits such a folder from masks and tables, catches tampering with
each kind of file, and says in one line what it cannot check without the weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line, real_data
from lth.cli import main
from lth.core.fileio import file_sha256, load_tensors
from lth.errors import LTHError
from lth.runfolder.packed import PackedMasks, pack_bits, unpack_bits, write_packed
from lth.runfolder.publish import publish
from lth.runfolder.readers import load_summary
from lth.runfolder.verify import VerifyError
from lth.runfolder.verify_published import PUBLISHED_CHECKS, SKIPPED, verify_published

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def published(tiny_run, tmp_path_factory) -> Path:
    """The session's tiny real-MNIST run, published (publish only reads the run)."""
    out = tmp_path_factory.mktemp("published") / "pub"
    assert main(["publish", str(tiny_run), str(out)]) == 0
    return out


@pytest.fixture
def pub(published, tmp_path) -> Path:
    """A copy of the published folder to tamper with."""
    return Path(shutil.copytree(published, tmp_path / "pub"))


def reseal(folder: Path) -> None:
    """Rewrite published.json's digests after tampering, so that a specific check must catch
    it (a consistent forgery)."""
    info = json.loads((folder / "published.json").read_text())
    info["files"] = {name: file_sha256(folder / name) for name in info["files"]}
    (folder / "published.json").write_text(json.dumps(info))


def test_pack_bits_is_numpy_packbits():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 266_200, 1001):
        bits = torch.rand(n, generator=gen) < 0.3
        want = np.packbits(bits.numpy())
        assert pack_bits(bits).numpy().tobytes() == want.tobytes()
        assert torch.equal(unpack_bits(pack_bits(bits), n), bits)


def test_packed_file_round_trips_masks_of_any_shape(tmp_path):
    gen = torch.Generator().manual_seed(1)
    masks = {
        ("ticket", r, lv): {
            "conv.weight": torch.rand(4, 3, 3, 3, generator=gen) < 0.5,
            "fc.weight": torch.rand(10, 13, generator=gen) < 0.5,
        }
        for r in range(2)
        for lv in range(3)
    }
    size = write_packed(tmp_path / "m.safetensors", masks, "fc.weight")
    packed = PackedMasks.load(tmp_path / "m.safetensors")
    assert packed.output == "fc.weight" and sorted(masks) == packed.networks()
    for key, want in masks.items():
        got = packed.masks(key)
        assert list(got) == list(want) and all(torch.equal(got[n], want[n]) for n in want)
    assert size == (tmp_path / "m.safetensors").stat().st_size
    assert size < 6 * (108 + 130) // 8 + 1000  # the bits and a small header


def test_publish_writes_exactly_the_small_files_and_every_mask(tiny_run, published):
    names = sorted(p.name for p in published.iterdir())
    figures = sorted(p.name for p in (tiny_run / "plots").glob("*.png"))
    tables = ["config.toml", "layers.csv", "metrics.csv", "summary.csv", "summary_stats.csv"]
    assert names == sorted([*tables, *figures, "masks.safetensors", "published.json",
                            "report.md"])  # fmt: skip
    packed = PackedMasks.load(published / "masks.safetensors")
    rows = load_summary(tiny_run)
    assert packed.networks() == sorted((r.branch, r.replicate, r.level) for r in rows)
    for b, r, lv in packed.networks():
        run_mask = load_tensors(tiny_run / b / str(r) / f"level_{lv:02d}" / "mask.safetensors")
        got = packed.masks((b, r, lv))
        assert all(torch.equal(got[n], m.bool()) for n, m in run_mask.items())
    bits = sum(m.numel() for m in got.values())
    assert (published / "masks.safetensors").stat().st_size < len(rows) * (bits // 8 + 1) + 1000
    assert (published / "report.md").read_text().startswith("# LTH report")


def test_verify_published_passes_and_names_the_skipped_checks_in_one_line(published, capsys):
    assert main(["verify", str(published)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if ln.startswith("skipped")] == [SKIPPED]
    for check in ("pruned-zero", "magnitude", "rewind", "starting weights"):
        assert check in SKIPPED
    done = {ln.split(":")[0].removeprefix("ok ") for ln in lines if ln.startswith("ok ")}
    assert done == set(PUBLISHED_CHECKS) - {"controls"}  # the tiny run has no other control


def test_a_changed_file_fails_the_manifest(pub):
    with open(pub / "summary_stats.csv", "a") as f:
        f.write("\n")
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check manifest failed", "summary_stats.csv was changed")


def _repack(pub: Path, change) -> None:
    packed = PackedMasks.load(pub / "masks.safetensors")
    masks = {k: packed.masks(k) for k in packed.networks()}
    change(masks)
    write_packed(pub / "masks.safetensors", masks, packed.output)
    reseal(pub)


def test_a_weight_kept_again_fails_the_mask_chain(pub):
    def regrow(masks):
        m = masks["ticket", 0, 2]["fc1.weight"].reshape(-1)
        m[int((~masks["ticket", 0, 1]["fc1.weight"].reshape(-1)).nonzero()[0])] = True

    _repack(pub, regrow)
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check mask-chain failed", "ticket replicate 0 level 2", "fc1.weight")


def test_a_random_prune_mask_other_than_its_seed_draws_fails(pub):
    def swap(masks):  # same counts, other weights: only the redrawn mask shows it
        m = masks["random_prune", 0, 1]["fc2.weight"].reshape(-1)
        kept, pruned = int(m.nonzero()[0]), int((~m).nonzero()[0])
        m[kept], m[pruned] = False, True

    _repack(pub, swap)
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check random-prune-control failed", "the mask its seed draws")


def test_a_reinit_mask_other_than_the_tickets_fails(pub):
    def flip(masks):
        m = masks["reinit", 0, 2]["fc3.weight"].reshape(-1)
        kept, pruned = int(m.nonzero()[0]), int((~m).nonzero()[0])
        m[kept], m[pruned] = False, True

    _repack(pub, flip)
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check reinit-control failed", "not the ticket's", "fc3.weight")


def test_a_summary_row_against_its_mask_fails(pub):
    text = (pub / "summary.csv").read_text().splitlines()
    i = next(i for i, ln in enumerate(text) if ln.startswith("ticket,0,2,"))
    cells = text[i].split(",")
    cells[3] = "70.0"
    text[i] = ",".join(cells)
    (pub / "summary.csv").write_text("\n".join(text) + "\n")
    reseal(pub)
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check summary failed", "weights_remaining 70.0")


def test_a_folder_published_without_masks_fails_in_one_line(pub, tmp_path, capsys):
    """A folder copied with cp before lth packed masks (tables only): exit 1, what to do."""
    folder = tmp_path / "copied"
    folder.mkdir()
    for name in ("config.toml", "summary.csv", "metrics.csv", "layers.csv"):
        shutil.copy(pub / name, folder / name)
    assert main(["verify", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "check files failed" in err and "lth publish RUN" in err


def test_publish_refuses_a_users_file_and_a_failing_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("mine\n")
    with pytest.raises(LTHError) as e:
        publish(tiny_run, out)
    assert_one_line(e, "summary.csv exists and lth publish did not write it", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]
    publish(tiny_run, out, force=True)
    publish(tiny_run, out)  # its own files: replaced without --force
    broken = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (broken / "ticket" / "0" / "level_01" / "final.safetensors").unlink()
    assert main(["publish", str(broken), str(tmp_path / "never")]) == 1
    assert "the run is not published" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_params_and_flops_are_recomputed_from_the_masks(pub):
    lines = (pub / "summary.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[-1].split(",")
    cells[header.index("flops")] = str(int(cells[header.index("flops")]) - 1)
    lines[-1] = ",".join(cells)
    (pub / "summary.csv").write_text("\n".join(lines) + "\n")
    reseal(pub)
    with pytest.raises(VerifyError) as e:
        verify_published(pub)
    assert_one_line(e, "check summary failed", "flops", "the masks give")


def test_a_one_shot_study_with_the_shuffle_ablation_publishes_and_verifies(tmp_path):
    """SNIP's one-shot masks need not nest (each level prunes θ0 afresh) and its layer_shuffle
    and inverted controls follow them: the published folder passes as the run folder does."""
    run, pub = tmp_path / "run", tmp_path / "pub"
    argv = ["run", "--criterion", "snip", "--levels", "2", "--iterations", "20"]
    argv += ["--eval-every", "10", "--val-size", "500", "--controls", "layer_shuffle,inverted"]
    assert main([*argv, "--data-dir", str(real_data("mnist")), "--out", str(run), "--quiet"]) == 0
    assert main(["publish", str(run), str(pub)]) == 0
    lines = verify_published(pub)
    assert any(line.startswith("ok pruning-count: 2 ") for line in lines), lines
    assert not any(line.startswith("ok mask-chain") for line in lines), lines  # none nest-checked
