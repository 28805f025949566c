"""Tests for lth.analysis.mask_analysis: hand-made masks and weights with exact expected numbers."""

import csv
import math

import numpy as np
import pytest
import torch

from helpers import BRANCH_SHIFT, MASKS, F, T, level_tensors, make_run, make_tensor_run
from lth.analysis.mask_analysis import (
    ANALYSIS_COLUMNS,
    analyze_run,
    has_level_files,
    jaccard_overlap,
    load_analysis,
    load_histograms,
    log_bins,
    magnitude_histograms,
    sign_kept,
    sign_kept_counts,
    write_analysis,
)
from lth.core.fileio import save_tensors
from lth.errors import LTHError
from lth.runfolder.layout import level_dir

# ----------------------------------------------------------------------------- a tiny run
# Two prunable layers (fc1.weight 2x3, fc2.weight 4) and an unpruned bias; levels 0-2 of the
# ticket, the reinit control (the ticket's masks) and the random_prune control.
# θ-start of every level; fc2.weight[2] is 0 at init, so never a "survivor" for sign_kept
# multiplies θ-start to give the end of training (negative: the sign flipped, 0: trained to 0)


# ----------------------------------------------------------------------------- brute force


def flat(x):
    return [v for row in x for v in row] if isinstance(x[0], list) else list(x)


def brute_jaccard(a, b):
    inter = union = 0
    for name in a:
        for x, y in zip(flat(a[name]), flat(b[name])):
            inter += x and y
            union += x or y
    return inter / union


def brute_sign(masks, init, final):
    kept = alive = 0
    for name, m in masks.items():
        for keep, i, f in zip(
            flat(m.tolist()), flat(init[name].tolist()), flat(final[name].tolist())
        ):
            if keep and i != 0:
                alive += 1
                kept += (i > 0 and f > 0) or (i < 0 and f < 0)
    return kept / alive if alive else None


# ----------------------------------------------------------------------------- pure functions


def test_jaccard_overlap_hand_made():
    a = {"w": torch.tensor([[T, T, F], [F, T, F]]), "v": torch.tensor([T, F])}
    b = {"w": torch.tensor([[T, F, F], [T, T, F]]), "v": torch.tensor([F, F])}
    assert jaccard_overlap(a["w"], b["w"]) == 0.5  # 2 shared of 4 kept by either
    assert jaccard_overlap(a["v"], b["v"]) == 0.0
    assert jaccard_overlap(a, b) == 2 / 5
    assert jaccard_overlap(a, a) == 1.0
    empty = torch.zeros(3, dtype=torch.bool)
    assert jaccard_overlap(empty, empty) == 1.0
    with pytest.raises(LTHError, match="different layers"):
        jaccard_overlap(a, {"w": b["w"]})
    with pytest.raises(LTHError, match="shapes"):
        jaccard_overlap(a["w"], b["v"])


def test_sign_kept_hand_made():
    init = {
        "w": torch.tensor([1.0, -2.0, 3.0, 0.0, -0.5, 4.0]),
        "v": torch.tensor([1.0, -1.0, 2.0]),
    }
    final = {
        "w": torch.tensor([0.5, 2.0, 3.0, 1.0, -1.0, -4.0]),
        "v": torch.tensor([0.0, -3.0, math.nan]),
    }
    masks = {"w": torch.tensor([T, T, T, T, T, F]), "v": torch.tensor([T, T, T])}
    # w: survivors 0, 1, 2, 4 (3 starts at 0, 5 is pruned); 1 flipped -> 3 of 4
    # v: 0 trained to exactly 0 and 2 became NaN: only 1 of 3 kept its sign
    assert sign_kept_counts(init, final, masks) == {"w": (3, 4), "v": (1, 3)}
    assert sign_kept(init["w"], final["w"], masks["w"]) == 0.75
    assert sign_kept(init["v"], final["v"], masks["v"]) == 1 / 3
    assert sign_kept(init, final, masks) == 4 / 7
    none = {"w": torch.zeros(6, dtype=torch.bool), "v": torch.zeros(3, dtype=torch.bool)}
    assert math.isnan(sign_kept(init, final, none))
    with pytest.raises(LTHError, match="final weights lack 'v'"):
        sign_kept(init, {"w": final["w"]}, masks)
    with pytest.raises(LTHError, match="shape"):
        sign_kept(init["w"], final["v"], masks["w"])


def test_magnitude_histograms_given_edges():
    init = torch.tensor([0.01, -0.1, 1.0, 10.0], dtype=torch.float64)
    final = torch.tensor([0.02, 0.0, -1.0, 100.0], dtype=torch.float64)
    masks = torch.tensor([T, T, T, F])
    edges = [0.001, 0.01, 0.1, 1.0, 10.0, 1000.0]
    h = magnitude_histograms(init, final, masks, edges)
    np.testing.assert_array_equal(h["edges"], edges)
    np.testing.assert_array_equal(h["init"], [0, 1, 1, 1, 0])  # the pruned 10.0 is left out
    np.testing.assert_array_equal(h["final"], [0, 1, 0, 1, 0])  # 0.0 is in no log bin
    assert (h["survivors"], h["init_outside"], h["final_outside"]) == (3, 0, 1)
    with pytest.raises(LTHError, match="increasing"):
        magnitude_histograms(init, final, masks, [1.0, 0.5])
    with pytest.raises(LTHError, match="mask 'layer' has dtype torch.float64"):
        magnitude_histograms(init, final, init, edges)


def test_magnitude_histograms_shared_log_bins():
    init = {"a": torch.tensor([0.01, -0.05]), "b": torch.tensor([[1.0]])}
    final = {"a": torch.tensor([0.02, -0.5]), "b": torch.tensor([[0.3]])}
    masks = {"a": torch.tensor([T, T]), "b": torch.tensor([[T]])}
    h = magnitude_histograms(init, final, masks, bins=2)
    # bins span min to max of both sets (float32 values), log-spaced: ~[0.01, 0.1, 1]
    lo, hi = float(torch.tensor(0.01)), 1.0
    np.testing.assert_array_equal(h["edges"], log_bins(lo, hi, 2))
    assert h["edges"][0] == lo and h["edges"][-1] == hi
    np.testing.assert_allclose(h["edges"][1], 0.1, rtol=1e-6)
    np.testing.assert_array_equal(h["init"], [2, 1])
    np.testing.assert_array_equal(h["final"], [1, 2])
    edges = log_bins(1e-3, 1e3, 6)
    np.testing.assert_allclose(edges, [1e-3, 1e-2, 1e-1, 1, 10, 100, 1000])
    np.testing.assert_allclose(log_bins(2.0, 2.0, 2), [1.0, 2.0, 4.0])
    with pytest.raises(LTHError, match="positive"):
        log_bins(0.0, 1.0)


# ----------------------------------------------------------------------------- run folders


def expected_rows(replicates=1, branches=("ticket", "reinit", "random_prune")):
    """analysis.csv rows computed independently with plain Python over the nested lists."""
    out = []
    for b in branches:
        for r in range(replicates):
            for lv in range(3):
                masks, init, final = level_tensors(b, r, lv)
                for layer in ["fc1.weight", "fc2.weight", "all"]:
                    names = ["fc1.weight", "fc2.weight"] if layer == "all" else [layer]
                    kept = sum(sum(flat(MASKS[b][lv][n])) for n in names)
                    total = sum(len(flat(MASKS[b][lv][n])) for n in names)
                    sub = {n: MASKS[b][lv][n] for n in names}
                    prev = (
                        brute_jaccard(sub, {n: MASKS[b][lv - 1][n] for n in names}) if lv else None
                    )
                    rp = None
                    if b == "ticket" and "random_prune" in branches:
                        rp = brute_jaccard(sub, {n: MASKS["random_prune"][lv][n] for n in names})
                    out.append(
                        {
                            "branch": b,
                            "replicate": r,
                            "level": lv,
                            "layer": layer,
                            "weights_remaining": 100.0 * kept / total,
                            "jaccard_previous_level": prev,
                            "jaccard_random_prune": rp,
                            "sign_kept": brute_sign({n: masks[n] for n in names}, init, final),
                        }
                    )
    return out


def test_analyze_run_exact_rows(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    rows = analyze_run(run)
    assert rows == expected_rows()
    by = {(r["branch"], r["level"], r["layer"]): r for r in rows}
    # spot checks written out by hand
    t1 = by[("ticket", 1, "all")]
    assert t1["weights_remaining"] == 70.0  # 7 of 10 kept
    assert t1["jaccard_previous_level"] == 7 / 10  # level 0 kept everything
    assert t1["jaccard_random_prune"] == 4 / 10
    assert by[("ticket", 1, "fc1.weight")]["jaccard_random_prune"] == 2 / 6
    assert by[("ticket", 2, "fc1.weight")]["jaccard_previous_level"] == 3 / 4
    assert by[("random_prune", 2, "all")]["jaccard_previous_level"] == 4 / 8
    assert by[("ticket", 0, "all")]["jaccard_random_prune"] == 1.0
    # ticket level 1 (FACTOR rolled by 1): fc1 final = [[-1, -4, -3], [-2, 1.25, -18]];
    # survivors (0,0) 1 -> -1 flipped, (0,1), (1,0), (1,2) kept -> 3 of 4. fc2 final =
    # [0, -1, 0, 2]; survivors 0 (0.5 -> 0: not kept) and 1 (kept); 2 starts at 0 -> 1 of 2
    assert by[("ticket", 1, "fc1.weight")]["sign_kept"] == 3 / 4
    assert by[("ticket", 1, "fc2.weight")]["sign_kept"] == 1 / 2
    assert t1["sign_kept"] == 4 / 6
    assert by[("reinit", 0, "all")]["jaccard_previous_level"] is None
    assert by[("reinit", 1, "all")]["jaccard_random_prune"] is None
    # the 'all' rows agree with the pure functions on the whole mask sets
    m1, i1, f1 = level_tensors("ticket", 0, 1)
    m0 = level_tensors("ticket", 0, 0)[0]
    assert t1["jaccard_previous_level"] == jaccard_overlap(m1, m0)
    assert t1["sign_kept"] == sign_kept(i1, f1, m1)


def test_write_analysis_csv(tmp_path):
    run = make_tensor_run(tmp_path / "run", replicates=2)
    path = write_analysis(run)
    assert path == run / "analysis.csv"
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporaries left
    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    assert list(raw[0]) == ANALYSIS_COLUMNS
    want = expected_rows(replicates=2)
    assert len(raw) == len(want) == 3 * 2 * 3 * 3
    for got, exp in zip(raw, want):
        for col in ANALYSIS_COLUMNS:
            value = exp[col]
            if value is None:
                assert got[col] == "", (col, got)
            elif isinstance(value, float):
                assert float(got[col]) == value, (col, got)  # full precision round trip
            else:
                assert got[col] == str(value)
    loaded = load_analysis(run)
    assert [r["sign_kept"] for r in loaded] == [r["sign_kept"] for r in want]
    assert math.isnan(loaded[0]["jaccard_previous_level"])


def test_write_analysis_histograms(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    write_analysis(run, bins=8)
    hist = load_histograms(run)
    assert len(hist) == 3 * 3 * 2 * 8
    lows = {r["bin"]: r["bin_low"] for r in hist}
    assert all(r["bin_low"] == lows[r["bin"]] for r in hist)  # one set of bins for the run
    edges = [lows[i] for i in range(8)] + [max(r["bin_high"] for r in hist)]
    # shared bins from the smallest to the largest non-zero surviving magnitude of the run
    mags = []
    for b in BRANCH_SHIFT:
        for lv in range(3):
            masks, init, final = level_tensors(b, 0, lv)
            for w in (init, final):
                mags += [abs(x) for n, m in masks.items() for x in w[n][m].tolist() if x != 0]
    assert (edges[0], edges[-1]) == (min(mags), max(mags))
    for b in BRANCH_SHIFT:
        for lv in range(3):
            masks, init, final = level_tensors(b, 0, lv)
            h = magnitude_histograms(init, final, masks, edges)
            for which in ("init", "final"):
                got = [
                    r["count"]
                    for r in sorted(hist, key=lambda r: r["bin"])
                    if (r["branch"], r["level"], r["weights"]) == (b, lv, which)
                ]
                assert got == h[which].tolist()
            assert sum(h["init"]) + h["init_outside"] == h["survivors"]


def test_run_without_random_prune(tmp_path):
    run = make_tensor_run(tmp_path / "run", branches=("ticket",))
    rows = analyze_run(run)
    assert rows == expected_rows(branches=("ticket",))
    assert all(r["jaccard_random_prune"] is None for r in rows)


def test_has_level_files(tmp_path):
    assert not has_level_files(make_run(tmp_path / "csv_only", levels=2))
    assert not has_level_files(tmp_path / "nowhere")
    assert has_level_files(make_tensor_run(tmp_path / "run"))


def one_line_error(run, match):
    with pytest.raises(LTHError, match=match) as e:
        analyze_run(run)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_and_corrupt_files(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    final = level_dir(run, "reinit", 0, 1) / "final.safetensors"
    final.unlink()
    one_line_error(run, "reinit/0/level_01/final.safetensors is missing")
    final.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    one_line_error(run, "reinit/0/level_01/final.safetensors is not a readable")
    with pytest.raises(LTHError, match="final.safetensors"):
        write_analysis(run)
    assert not (run / "analysis.csv").exists()


def test_inconsistent_level_files(tmp_path):
    run = make_tensor_run(tmp_path / "a")
    folder = level_dir(run, "ticket", 0, 2)
    masks, init, _ = level_tensors("ticket", 0, 2)
    del init["fc2.weight"]
    save_tensors(folder / "init.safetensors", init)
    one_line_error(run, "ticket/0/level_02/init.safetensors lacks 'fc2.weight'")

    run = make_tensor_run(tmp_path / "b")
    folder = level_dir(run, "random_prune", 0, 1)
    save_tensors(folder / "mask.safetensors", {"fc1.weight": masks["fc1.weight"]})
    msg = one_line_error(run, "different layers")
    assert "random_prune/0/level_01/mask.safetensors" in msg

    run = make_tensor_run(tmp_path / "c")
    folder = level_dir(run, "ticket", 0, 0)
    save_tensors(folder / "mask.safetensors", {k: v.float() for k, v in masks.items()})
    one_line_error(run, "ticket/0/level_00/mask.safetensors: mask 'fc1.weight' has dtype")

    run = make_tensor_run(tmp_path / "d")
    (run / "summary.csv").unlink()
    one_line_error(run, "summary.csv")
