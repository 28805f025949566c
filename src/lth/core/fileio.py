"""Files written atomically, safetensors files that keep the order of their names, checksums.

Writes: :func:`atomic_write` writes every file lth writes: a temporary
``.<name>.<8 characters>.tmp`` in the same folder, fsync, then a rename, so a reader never sees
a torn file; the file mode follows the user's umask (with a ``tag``, the run folder's id, the
temporary is ``.<name>.<tag>-<8 characters>.tmp``: see :mod:`lth.runfolder.manifest`).

Tensors: safetensors files whose metadata keeps the order of the names (:func:`save_tensors`,
:func:`load_tensors`; safetensors itself stores names sorted, and random draws follow the
order).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor

from lth.errors import LTHError

ORDER_KEY = "lth_mask_order"  # safetensors metadata: JSON list of the names in dict order


def atomic_write(path: str | os.PathLike[str], data: bytes | str, tag: str | None = None) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a torn file.

    The bytes go to a temporary ``.<name>.<8 characters>.tmp`` in the same folder (with a
    ``tag``, the run folder's id: ``.<name>.<tag>-<8 characters>.tmp``, a name only lth makes,
    see :func:`lth.runfolder.manifest.remove_temporaries`), are fsynced, and the temporary is
    renamed over ``path``.
    The file gets the mode a new file gets (0666 less the umask). An :class:`OSError` (disk
    full, permissions) is re-raised with ``filename`` set to ``path``, after the temporary is
    removed.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    prefix = f".{path.name}." + (f"{tag}-" if tag else "")
    try:
        while tmp is None:
            candidate = path.with_name(f"{prefix}{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            tmp = candidate
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def tensor_bytes(tensors: Mapping[str, Tensor]) -> bytes:
    """``tensors`` as the bytes of a safetensors file that keeps the order of the names."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _st_save(data, metadata={ORDER_KEY: json.dumps(list(data))})


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor]) -> None:
    """Save tensors as a safetensors file, atomically, keeping the order of the names."""
    atomic_write(path, tensor_bytes(tensors))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a safetensors file, in the order :func:`save_tensors` saved them.

    Raises :class:`LTHError` naming the file when it is missing or damaged.
    """
    try:
        raw = Path(path).read_bytes()
        tensors = _st_load(raw)
        size = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + size]).get("__metadata__") or {}
        order = json.loads(metadata.get(ORDER_KEY, "[]"))
    except FileNotFoundError:
        raise LTHError(f"{path} is missing; the run folder is incomplete") from None
    except Exception as e:  # safetensors raises several types for damaged files
        raise LTHError(
            f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated"
        ) from None
    names = [n for n in order if n in tensors] + [n for n in tensors if n not in order]
    return {n: tensors[n] for n in names}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
