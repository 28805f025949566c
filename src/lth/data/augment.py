"""Data augmentation applied to whole batches of image tensors, on the batch's device.

Each augmentation is a pair of pure functions, registered in :data:`AUGMENTATIONS` by name:

* ``draw(n, generator, ...)`` draws the random parameters of ``n`` samples **on the CPU** from
  an explicit, seeded :class:`torch.Generator` (the global RNG is never read), so a run is
  reproducible whatever device it trains on;
* ``apply(x, *params, ...)`` applies them to a batch ``x`` of shape ``(N, C, H, W)`` without a
  Python loop over samples; the parameters are moved to ``x``'s device inside.

Typical use, once per training step (never at evaluation)::

    draw, apply = AUGMENTATIONS[dataset.augmentation]
    x = apply(x, *draw(x.shape[0], generator))

The standard CIFAR-10 augmentation is ``"crop_flip"``: zero-pad by 4 pixels on each side, take a
random 32x32 crop, and flip horizontally with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lth.errors import LTHError

__all__ = ["AUGMENTATIONS", "crop_flip", "draw_crop_flip"]


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LTHError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def draw_crop_flip(
    n: int, generator: torch.Generator, padding: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets and flip flags for ``n`` samples, drawn on the CPU from ``generator``.

    Returns ``offsets``, int64 of shape ``(n, 2)`` holding ``(row, column)`` offsets into the
    padded image, each uniform over ``0..2*padding``, and ``flips``, bool of shape ``(n,)``, each
    true with probability 1/2. Offsets are drawn first, then flips, so the generator advances
    by the same amount for the same ``n`` and ``padding``.
    """
    n = _check_int(n, "the number of samples n", 0)
    padding = _check_int(padding, "padding", 0)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise LTHError(
            f"draw_crop_flip needs a CPU torch.Generator, got {generator!r}; "
            "create one with torch.Generator().manual_seed(seed)"
        )
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, dtype=torch.int64)
    flips = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).bool()
    return offsets, flips


def crop_flip(
    x: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    padding: int = 4,
    *,
    fill: float | Sequence[float] | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Pad, crop and mirror every image of the batch ``x`` (``(N, C, H, W)``) at once.

    Each image is padded by ``padding`` pixels on every side with ``fill`` (a scalar, or one
    value per channel; 0 by default), then the ``H x W`` window whose top-left corner is at
    ``offsets[i] = (row, column)`` of the padded image is taken, and mirrored left-right where
    ``flips[i]`` is true. Offsets ``(padding, padding)`` and no flip give the image back
    unchanged. The result is a new tensor of ``x``'s shape, dtype and device; ``x`` is not
    modified. Offsets must lie in ``[0, 2*padding]`` (checked when they are on the CPU).

    On images already normalised with ``(x - mean) / std``, pass
    ``fill=[-m / s for m, s in zip(mean, std)]`` to pad with black pixels as torchvision's
    ``RandomCrop(32, padding=4)`` does on raw images; the default pads with the mean colour.
    """
    padding = _check_int(padding, "padding", 0)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise LTHError(f"crop_flip needs a batch of images of shape (N, C, H, W), got {shape}")
    n, c, h, w = x.shape
    if not isinstance(offsets, torch.Tensor) or tuple(offsets.shape) != (n, 2):
        raise LTHError(
            f"crop_flip offsets must be a tensor of shape ({n}, 2), got "
            f"{tuple(offsets.shape) if isinstance(offsets, torch.Tensor) else offsets!r}"
        )
    if not isinstance(flips, torch.Tensor) or tuple(flips.shape) != (n,):
        raise LTHError(
            f"crop_flip flips must be a tensor of shape ({n},), got "
            f"{tuple(flips.shape) if isinstance(flips, torch.Tensor) else flips!r}"
        )
    if offsets.is_floating_point() or offsets.is_complex() or offsets.dtype == torch.bool:
        raise LTHError(f"crop_flip offsets must be integers, got dtype {offsets.dtype}")
    if offsets.device.type == "cpu" and n and (offsets.min() < 0 or offsets.max() > 2 * padding):
        raise LTHError(
            f"crop_flip offsets range from {int(offsets.min())} to {int(offsets.max())}, but "
            f"they must lie in [0, {2 * padding}] for padding {padding}; draw them with "
            "draw_crop_flip and the same padding"
        )
    device = x.device
    offsets = offsets.to(device=device, dtype=torch.int64)
    flips = flips.to(device=device, dtype=torch.bool)
    hp, wp = h + 2 * padding, w + 2 * padding

    # The padded batch, filled with `fill` around the original images.
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=device)
    if fill_t.dim() > 1 or (fill_t.dim() == 1 and fill_t.numel() not in (1, c)):
        raise LTHError(
            f"crop_flip fill must be a number or {c} per-channel values, got {tuple(fill_t.shape)}"
        )
    padded = x.new_empty((n, c, hp, wp))
    padded.copy_(fill_t.reshape(1, -1, 1, 1).expand(n, c, hp, wp))
    padded[:, :, padding : padding + h, padding : padding + w] = x

    # Source pixel of every output pixel, as a flat index into one padded channel: output (i, j)
    # of sample k reads padded (offsets[k, 0] + i, offsets[k, 1] + j), or column
    # offsets[k, 1] + (w - 1 - j) when the sample is mirrored.
    rows = offsets[:, :1] + torch.arange(h, device=device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(w, device=device)  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w)
    out = torch.gather(padded.reshape(n, c, hp * wp), 2, flat.expand(n, c, h * w))
    return out.reshape(n, c, h, w)


Draw = Callable[..., tuple[torch.Tensor, ...]]
Apply = Callable[..., torch.Tensor]

#: Augmentations by name: ``(draw, apply)``, see the module documentation.
AUGMENTATIONS: dict[str, tuple[Draw, Apply]] = {"crop_flip": (draw_crop_flip, crop_flip)}
