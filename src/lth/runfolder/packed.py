"""Masks bit-packed: every network's mask of a study in one small safetensors file.

``lth publish`` (:mod:`lth.runfolder.publish`) writes it as ``masks.safetensors`` beside the
tables it copies, so that ``lth verify`` can audit a published folder without the weights
(:mod:`lth.runfolder.verify_published`). Format 1: one ``uint8`` tensor per network, named
``<branch>/<replicate>/<level>``, holding the bits of its masks, layer after layer, each
flattened in row-major order, eight to a byte, the first bit the most significant (what
``numpy.packbits(bits)`` gives: ``bitorder="big"``), the last byte padded with zeros. The
file's metadata holds the format, the layers in order with their shapes (``layers``: a JSON
list of ``[name, shape]``) and the output layer's weight (``output``, for ``output_rate``).

A LeNet-300-100 network has 266,200 prunable weights: 33,275 bytes a network, so a study of 18
levels, 3 replicates and 2 controls (162 networks) packs into 5,403,502 bytes (5.4 MB; 3.3 MB
gzipped, about what git stores: measured on masks of that study's per-layer densities).

>>> import torch
>>> m = torch.tensor([True, False, True, True, False, False, False, False, True])
>>> pack_bits(m).tolist()                      # 0b10110000, 0b10000000
[176, 128]
>>> torch.equal(unpack_bits(pack_bits(m), m.numel()), m)
True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from lth.core.fileio import atomic_write
from lth.errors import LTHError

__all__ = ["FORMAT", "PackedMasks", "pack_bits", "unpack_bits", "write_packed"]

FORMAT = "1"
Key = tuple[str, int, int]  # branch, replicate, level
_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
_SHIFTS = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)


def pack_bits(bits: Tensor) -> Tensor:
    """A bool tensor's entries, flattened, as bytes: eight to a byte, most significant first.

    The same bytes as ``numpy.packbits(bits.reshape(-1))``.

    Args:
        bits: Any bool (or 0/1) tensor.

    Returns:
        Tensor: ``uint8`` of ``ceil(bits.numel() / 8)`` entries.

    Examples:
        >>> pack_bits(torch.ones(10, dtype=torch.bool)).tolist()
        [255, 192]
    """
    flat = bits.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8)])
    return (flat.view(-1, 8) * _WEIGHTS).sum(1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(data: Tensor, n: int) -> Tensor:
    """The first ``n`` bits of bytes :func:`pack_bits` wrote, as a flat bool tensor.

    Args:
        data: ``uint8`` bytes.
        n: How many bits to read (at most ``8 * data.numel()``).

    Returns:
        Tensor: bool, ``n`` entries.

    Examples:
        >>> unpack_bits(torch.tensor([255, 192], dtype=torch.uint8), 10).all().item()
        True
    """
    bits = (data.reshape(-1, 1) >> _SHIFTS) & 1
    return bits.reshape(-1)[:n].bool()


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}/{key[2]}"


def write_packed(
    path: str | os.PathLike[str], masks: Mapping[Key, Mapping[str, Tensor]], output: str | None
) -> int:
    """Write every network's masks, bit-packed, as one safetensors file (atomically).

    Args:
        path: The file to write (``masks.safetensors``).
        masks: ``{(branch, replicate, level): {layer: bool tensor}}``; every network masks the
            same layers in the same order and shapes.
        output: The output layer's weight name (recorded for ``output_rate``), or None.

    Returns:
        int: The size of the file in bytes.

    Examples:
        >>> import tempfile
        >>> m = {("ticket", 0, 0): {"fc.weight": torch.ones(3, 4, dtype=torch.bool)}}
        >>> f = tempfile.mkdtemp() + "/masks.safetensors"
        >>> size = write_packed(f, m, "fc.weight")
        >>> PackedMasks.load(f).masks(("ticket", 0, 0))["fc.weight"].all().item()
        True
    """
    keys = list(masks)
    if not keys:
        raise LTHError("no masks to pack: the run folder has no finished level")
    layers = [(n, list(m.shape)) for n, m in masks[keys[0]].items()]
    tensors = {}
    for key in keys:
        mine = [(n, list(m.shape)) for n, m in masks[key].items()]
        if mine != layers:
            raise LTHError(
                f"{_name(key)} masks {mine}, another network {layers}: the run folder is "
                "inconsistent; run lth verify on it"
            )
        tensors[_name(key)] = pack_bits(torch.cat([m.reshape(-1) for m in masks[key].values()]))
    metadata = {"format": FORMAT, "layers": json.dumps(layers), "output": output or ""}
    data = st_save(tensors, metadata=metadata)
    atomic_write(path, data)
    return len(data)


@dataclass(frozen=True)
class PackedMasks:
    """The masks of a published study, read from ``masks.safetensors`` (:func:`write_packed`).

    Examples:
        >>> import tempfile
        >>> m = {("ticket", 0, 1): {"w": torch.tensor([[True, False]])}}
        >>> f = tempfile.mkdtemp() + "/masks.safetensors"
        >>> _ = write_packed(f, m, None)
        >>> packed = PackedMasks.load(f)
        >>> packed.networks(), packed.masks(("ticket", 0, 1))["w"].tolist()
        ([('ticket', 0, 1)], [[True, False]])
    """

    path: Path
    layers: tuple[tuple[str, tuple[int, ...]], ...]
    output: str | None
    data: dict[Key, Tensor]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PackedMasks:
        """Read and check a packed-masks file; a missing or damaged one is a one-line
        :class:`~lth.errors.LTHError`."""
        path = Path(path)
        try:
            raw = path.read_bytes()
            tensors = st_load(raw)
            size = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8 : 8 + size]).get("__metadata__") or {}
            layers = tuple(
                (str(n), tuple(int(d) for d in s)) for n, s in json.loads(meta["layers"])
            )
        except FileNotFoundError:
            raise LTHError(f"{path} is missing; publish the study again (lth publish)") from None
        except Exception as e:  # safetensors raises several types for damaged files
            raise LTHError(
                f"{path} is not a packed-masks file lth wrote ({type(e).__name__}: {e}); "
                "publish the study again (lth publish RUN OUT)"
            ) from None
        if meta.get("format") != FORMAT:
            raise LTHError(
                f"{path} has packed-masks format {meta.get('format')!r}; this lth reads "
                f"format {FORMAT}: use the lth that published it"
            )
        bits = sum(math.prod(s) for _, s in layers)
        data: dict[Key, Tensor] = {}
        for name, t in tensors.items():
            parts = name.split("/")
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                raise LTHError(f"{path} holds {name!r}, not a network <branch>/<replicate>/<level>")
            if t.dtype != torch.uint8 or t.shape != (math.ceil(bits / 8),):
                raise LTHError(
                    f"{path}: {name} is {t.dtype} {tuple(t.shape)}, expected torch.uint8 "
                    f"({math.ceil(bits / 8)},) for the {bits} bits of its layers"
                )
            data[parts[0], int(parts[1]), int(parts[2])] = t
        return cls(path, layers, meta.get("output") or None, data)

    def networks(self) -> list[Key]:
        """The networks the file holds, sorted."""
        return sorted(self.data)

    def masks(self, key: Key) -> dict[str, Tensor]:
        """One network's masks, ``{layer: bool tensor}`` in the layers' order."""
        sizes = [math.prod(s) for _, s in self.layers]
        flat = unpack_bits(self.data[key], sum(sizes))
        return {
            name: part.reshape(shape)
            for (name, shape), part in zip(self.layers, flat.split(sizes), strict=True)
        }
