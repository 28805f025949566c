"""Tests for lth.data.augment: batched random crop with padding and horizontal flip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lth.data.augment import AUGMENTATIONS, crop_flip, draw_crop_flip
from lth.errors import LTHError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def oracle(x, offsets, flips, padding=4, fill=0.0):
    """The naive per-sample definition: pad, slice the window, mirror if flagged."""
    _, c, h, w = x.shape
    out = []
    for k in range(x.shape[0]):
        if isinstance(fill, float):
            padded = F.pad(x[k], (padding, padding, padding, padding), value=fill)
        else:  # per-channel fill
            padded = torch.stack(
                [F.pad(x[k, i], (padding,) * 4, value=float(fill[i])) for i in range(c)]
            )
        row, col = int(offsets[k, 0]), int(offsets[k, 1])
        crop = padded[:, row : row + h, col : col + w]
        if bool(flips[k]):
            crop = torch.flip(crop, dims=[-1])
        out.append(crop)
    return torch.stack(out) if out else x.new_empty(x.shape)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_one_line(exc: pytest.ExceptionInfo, *needles: object) -> None:
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)


# --------------------------------------------------------------------------------------------
# Against the naive oracle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape, padding",
    [((64, 3, 32, 32), 4), ((33, 2, 7, 9), 1), ((16, 1, 5, 5), 0), ((8, 3, 6, 4), 5)],
)
def test_matches_naive_loop(shape, padding, device):
    x = torch.randn(shape, generator=gen(0)).to(device)
    offsets, flips = draw_crop_flip(shape[0], gen(1), padding=padding)
    assert flips.any() and not flips.all()
    got = crop_flip(x, offsets, flips, padding=padding)
    assert got.shape == x.shape and got.dtype == x.dtype and got.device == x.device
    assert torch.equal(got.cpu(), oracle(x.cpu(), offsets, flips, padding))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.uint8])
def test_other_dtypes(dtype):
    x = (torch.rand(10, 3, 8, 8, generator=gen(2)) * 200).to(dtype)
    offsets, flips = draw_crop_flip(10, gen(3), padding=2)
    got = crop_flip(x, offsets, flips, padding=2)
    assert got.dtype == dtype
    assert torch.equal(got, oracle(x, offsets, flips, padding=2))


def test_per_channel_fill():
    x = torch.randn(12, 3, 8, 8, generator=gen(4))
    offsets, flips = draw_crop_flip(12, gen(5))
    fill = (-1.5, 0.25, 7.0)
    assert torch.equal(crop_flip(x, offsets, flips, fill=fill), oracle(x, offsets, flips, 4, fill))
    assert torch.equal(
        crop_flip(x, offsets, flips, fill=-2.0), oracle(x, offsets, flips, 4, fill=-2.0)
    )
    corner = crop_flip(x[:1], torch.tensor([[0, 0]]), torch.tensor([False]), fill=fill)
    assert corner[0, :, 0, 0].tolist() == list(fill)
    with pytest.raises(LTHError) as exc:
        crop_flip(x, offsets, flips, fill=(1.0, 2.0))
    assert_one_line(exc, "fill", "3 per-channel")


def test_input_untouched_and_empty_batch():
    x = torch.randn(6, 3, 32, 32, generator=gen(6))
    before = x.clone()
    out = crop_flip(x, *draw_crop_flip(6, gen(7)))
    assert torch.equal(x, before) and out.data_ptr() != x.data_ptr()
    empty = crop_flip(torch.zeros(0, 3, 32, 32), *draw_crop_flip(0, gen(8)))
    assert empty.shape == (0, 3, 32, 32)


def test_no_python_loop_over_samples():
    """The number of torch calls does not depend on the batch size."""

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    counts = []
    for n in (2, 200):
        x = torch.randn(n, 3, 32, 32)
        offsets, flips = draw_crop_flip(n, gen(9))
        Count.calls = 0
        with Count():
            crop_flip(x, offsets, flips)
        counts.append(Count.calls)
    assert counts[0] == counts[1] and counts[0] < 60, counts


# --------------------------------------------------------------------------------------------
# Crop and flip are really applied
# --------------------------------------------------------------------------------------------


def test_centre_offsets_without_flip_are_the_identity():
    x = torch.randn(5, 3, 32, 32, generator=gen(10))
    out = crop_flip(x, torch.full((5, 2), 4), torch.zeros(5, dtype=torch.bool))
    assert torch.equal(out, x)


def test_flip_is_applied_to_flagged_samples_only():
    x = torch.randn(6, 3, 32, 32, generator=gen(11))
    flips = torch.tensor([True, False, True, True, False, False])
    out = crop_flip(x, torch.full((6, 2), 4), flips)
    for k in range(6):
        expected = torch.flip(x[k], dims=[-1]) if flips[k] else x[k]
        assert torch.equal(out[k], expected), k
    assert not torch.equal(out[0], x[0])  # a mirror really differs


def test_crop_shifts_content_and_pads_with_zeros():
    x = torch.rand(2, 3, 32, 32, generator=gen(12)) + 1.0  # no zeros in the images
    none = torch.zeros(2, dtype=torch.bool)
    top_left = crop_flip(x, torch.tensor([[0, 0], [0, 0]]), none)
    # window at (0, 0) of the padded image: content moves down and right by 4
    assert torch.equal(top_left[:, :, 4:, 4:], x[:, :, :28, :28])
    assert (top_left[:, :, :4, :] == 0).all() and (top_left[:, :, :, :4] == 0).all()
    bottom_right = crop_flip(x, torch.tensor([[8, 8], [8, 8]]), none)
    assert torch.equal(bottom_right[:, :, :28, :28], x[:, :, 4:, 4:])
    assert (bottom_right[:, :, 28:, :] == 0).all() and (bottom_right[:, :, :, 28:] == 0).all()
    rows_only = crop_flip(x, torch.tensor([[1, 4], [7, 4]]), none)
    assert torch.equal(rows_only[0, :, 3:], x[0, :, :29]) and (rows_only[0, :, :3] == 0).all()
    assert torch.equal(rows_only[1, :, :29], x[1, :, 3:]) and (rows_only[1, :, 29:] == 0).all()
    # the offsets are (row, column): a column offset moves the content sideways
    cols_only = crop_flip(x, torch.tensor([[4, 2], [4, 4]]), none)
    assert torch.equal(cols_only[0, :, :, 2:], x[0, :, :, :30])
    assert (cols_only[0, :, :, :2] == 0).all()
    assert torch.equal(cols_only[1], x[1])


def test_flip_and_crop_together():
    x = torch.rand(1, 1, 6, 6, generator=gen(13)) + 1.0
    out = crop_flip(x, torch.tensor([[0, 0]]), torch.tensor([True]), padding=2)
    padded = F.pad(x, (2, 2, 2, 2))
    assert torch.equal(out, torch.flip(padded[:, :, :6, :6], dims=[-1]))
    assert (out[0, 0, :, 4:] == 0).all()  # the padded left border ends up on the right


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def test_draw_types_and_ranges():
    offsets, flips = draw_crop_flip(100, gen(14))
    assert offsets.shape == (100, 2) and offsets.dtype == torch.int64
    assert flips.shape == (100,) and flips.dtype == torch.bool
    assert offsets.device.type == "cpu" and flips.device.type == "cpu"
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 8
    offsets, _ = draw_crop_flip(50, gen(14), padding=0)
    assert (offsets == 0).all()
    empty_offsets, empty_flips = draw_crop_flip(0, gen(14))
    assert empty_offsets.shape == (0, 2) and empty_flips.shape == (0,)


def test_draw_is_deterministic_per_seed():
    a, b = draw_crop_flip(256, gen(15)), draw_crop_flip(256, gen(15))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = draw_crop_flip(256, gen(16))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    g = gen(15)
    first, second = draw_crop_flip(256, g), draw_crop_flip(256, g)
    assert torch.equal(first[0], a[0]) and not torch.equal(second[0], first[0])
    x = torch.randn(256, 3, 32, 32, generator=gen(17))
    assert torch.equal(crop_flip(x, *a), crop_flip(x, *b))


def test_draw_distribution():
    n = 45000
    offsets, flips = draw_crop_flip(n, gen(18))
    assert abs(flips.float().mean().item() - 0.5) < 0.015
    for axis in (0, 1):
        counts = torch.bincount(offsets[:, axis], minlength=9)
        assert counts.shape == (9,)
        assert ((counts - n / 9).abs() < 0.07 * n / 9).all(), counts.tolist()
    # rows, columns and flips are drawn independently of each other
    joint = torch.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81)
    assert (joint > 0).all()
    assert abs(flips[offsets[:, 0] < 4].float().mean().item() - 0.5) < 0.03


def test_global_rng_untouched():
    state = torch.get_rng_state()
    offsets, flips = draw_crop_flip(64, gen(19))
    crop_flip(torch.randn(64, 3, 32, 32, generator=gen(20)), offsets, flips)
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------------------------
# Registry, devices and bad input
# --------------------------------------------------------------------------------------------


def test_registry_and_typical_use():
    assert {"crop_flip": (draw_crop_flip, crop_flip)} == AUGMENTATIONS
    draw, apply = AUGMENTATIONS["crop_flip"]
    x = torch.randn(16, 3, 32, 32, generator=gen(21))
    out = apply(x, *draw(x.shape[0], gen(22)))
    assert torch.equal(out, oracle(x, *draw_crop_flip(16, gen(22))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parameters_follow_the_batch_to_the_gpu():
    x = torch.randn(128, 3, 32, 32, generator=gen(23))
    offsets, flips = draw_crop_flip(128, gen(24))
    fill = (-1.0, -2.0, -3.0)
    got = crop_flip(x.cuda(), offsets, flips, fill=fill)  # CPU parameters, GPU batch
    assert got.is_cuda
    assert torch.equal(got.cpu(), crop_flip(x, offsets, flips, fill=fill))
    again = crop_flip(x.cuda(), offsets.cuda(), flips.cuda(), fill=fill)
    assert torch.equal(again, got)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: draw_crop_flip(-1, gen(0)), "n"),
        (lambda: draw_crop_flip(2.0, gen(0)), "n"),
        (lambda: draw_crop_flip(4, gen(0), padding=-1), "padding"),
        (lambda: draw_crop_flip(4, 0), "torch.Generator"),
        (
            lambda: crop_flip(torch.zeros(3, 8, 8), torch.zeros(3, 2), torch.zeros(3)),
            "(N, C, H, W)",
        ),
        (
            lambda: crop_flip(
                torch.zeros(3, 1, 8, 8),
                torch.zeros(2, 2, dtype=torch.long),
                torch.zeros(3, dtype=torch.bool),
            ),
            "(3, 2)",
        ),  # fmt: skip
        (
            lambda: crop_flip(
                torch.zeros(3, 1, 8, 8),
                torch.zeros(3, 2, dtype=torch.long),
                torch.zeros(3, 1, dtype=torch.bool),
            ),
            "(3,)",
        ),  # fmt: skip
        (
            lambda: crop_flip(
                torch.zeros(2, 1, 8, 8), torch.zeros(2, 2), torch.zeros(2, dtype=torch.bool)
            ),
            "integers",
        ),  # fmt: skip
        (
            lambda: crop_flip(
                torch.zeros(2, 1, 8, 8),
                torch.tensor([[0, 9], [0, 0]]),
                torch.zeros(2, dtype=torch.bool),
            ),
            "[0, 8]",
        ),  # fmt: skip
        (
            lambda: crop_flip(
                torch.zeros(2, 1, 8, 8),
                torch.tensor([[0, -1], [0, 0]]),
                torch.zeros(2, dtype=torch.bool),
                padding=1,
            ),
            "[0, 2]",
        ),  # fmt: skip
    ],
)
def test_bad_input(call, needle):
    with pytest.raises(LTHError) as exc:
        call()
    assert_one_line(exc, needle)
