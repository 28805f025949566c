"""Helpers shared by test files (no test file imports another): tiny run folders from
known numbers, synthetic data, real-MNIST slices and tampering tools."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from types import SimpleNamespace

import torch

from conftest import real_data
from lth.core.fileio import file_sha256, load_tensors, save_tensors
from lth.core.models import create_model, initialize
from lth.data import dataset_from_tensors, load_dataset
from lth.runfolder.layout import level_dir
from lth.runfolder.manifest import Manifest
from lth.study.experiment import ExperimentConfig

# ---- from tests/analysis/test_mask_analysis.py

T, F = True, False


MASKS = {
    "ticket": [
        {"fc1.weight": [[T, T, T], [T, T, T]], "fc2.weight": [T, T, T, T]},
        {"fc1.weight": [[T, T, F], [T, F, T]], "fc2.weight": [T, T, T, F]},
        {"fc1.weight": [[T, F, F], [T, F, T]], "fc2.weight": [T, F, T, F]},
    ],
    "random_prune": [
        {"fc1.weight": [[T, T, T], [T, T, T]], "fc2.weight": [T, T, T, T]},
        {"fc1.weight": [[F, T, T], [T, T, F]], "fc2.weight": [T, F, T, T]},
        {"fc1.weight": [[F, T, F], [T, F, T]], "fc2.weight": [F, F, T, T]},
    ],
}


MASKS["reinit"] = MASKS["ticket"]


INIT = {"fc1.weight": [[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]], "fc2.weight": [0.5, -0.5, 0.0, 2.0]}


REINIT = {"fc1.weight": [[-1.0, 2.0, 3.0], [4.0, -5.0, 6.0]], "fc2.weight": [1.5, 0.25, 0.0, -2.0]}


FACTOR = {
    "fc1.weight": [[2.0, -1.0, 0.5], [0.25, 3.0, -1.0]],
    "fc2.weight": [2.0, 2.0, 1.0, 0.0],
}


BRANCH_SHIFT = {"ticket": 0, "reinit": 1, "random_prune": 2}


def level_tensors(branch, replicate, level):
    """(masks, init, final) of one level: masked entries of final are 0; the sign flips of
    FACTOR are rolled by level, branch and replicate so that every row differs."""
    masks = {k: torch.tensor(v) for k, v in MASKS[branch][level].items()}
    base = REINIT if branch == "reinit" else INIT
    init = {k: torch.tensor(v) for k, v in base.items()}
    init["fc1.bias"] = torch.tensor([0.1, -0.1])
    shift = level + BRANCH_SHIFT[branch] + replicate
    final = {}
    for k, v in init.items():
        factor = torch.tensor(FACTOR[k]) if k in FACTOR else torch.ones_like(v)
        factor = torch.roll(factor.flatten(), shift).reshape(v.shape)
        final[k] = v * factor
        if k in masks:
            final[k] = final[k].masked_fill(~masks[k], 0.0)
    return masks, init, final


def make_tensor_run(path, replicates=1, branches=("ticket", "reinit", "random_prune")):
    """make_run's CSV files (levels 0-2) plus hand-made mask/init/final safetensors."""
    make_run(path, replicates=replicates, levels=2, branches=branches)
    for b in branches:
        for r in range(replicates):
            for lv in range(3):
                masks, init, final = level_tensors(b, r, lv)
                folder = level_dir(path, b, r, lv)
                folder.mkdir(parents=True)
                save_tensors(folder / "mask.safetensors", masks)
                save_tensors(folder / "init.safetensors", init)
                save_tensors(folder / "final.safetensors", final)
    return path


# ---- from tests/analysis/test_report.py

BRANCHES = ("ticket", "reinit", "random_prune")


LAYERS = (
    ("fc1.weight", 300, 784, 0.2),
    ("fc2.weight", 100, 300, 0.2),
    ("fc3.weight", 10, 100, 0.1),
)


REP_OFFSET = (0.0, 0.37, -0.21, 0.11)


BASE = {"ticket": (97.9, 0.15), "reinit": (97.8, -0.45), "random_prune": (97.6, -0.7)}


def acc_end(branch, replicate, level):
    base, slope = BASE[branch]
    return base + slope * level + REP_OFFSET[replicate]


def es_acc(branch, replicate, level):
    return acc_end(branch, replicate, level) - 0.25


def es_iter(branch, replicate, level):
    return 100 * (1 + (level + replicate + BRANCHES.index(branch)) % 5)


def val_acc(branch, replicate, level, iteration):
    return 10 + 85 * (1 - math.exp(-iteration / 150)) + level + 0.5 * replicate


def val_loss(branch, replicate, level, iteration):
    return 2.3 * math.exp(-iteration / 200) + 0.05 * level + 0.01 * replicate


def layer_counts(levels):
    """kept per layer per level: each level removes round(rate * survivors)."""
    out = []
    kept = {name: rows * cols for name, rows, cols, _ in LAYERS}
    for _ in range(levels + 1):
        out.append(dict(kept))
        kept = {name: kept[name] - round(kept[name] * rate) for name, _, _, rate in LAYERS}
    return out


def weights_remaining(levels):
    total = sum(r * c for _, r, c, _ in LAYERS)
    return [100.0 * sum(k.values()) / total for k in layer_counts(levels)]


def _write(path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def make_run(
    path,
    replicates=1,
    levels=3,
    branches=BRANCHES,
    iterations=500,
    eval_every=100,
    diverged=(),
    config=True,
    shift=0.0,
    settings="",
):
    """A format-exact run folder from the known numbers above.

    ``diverged``: (branch, replicate, level) triples whose summary row has diverged_at set.
    ``shift``: added to every accuracy (another seed's run); ``settings``: more TOML lines for
    config.toml (e.g. 'seed = 1'), which replace the defaults' lines of the same keys.
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / "plots").mkdir(exist_ok=True)
    if config:
        lines = {
            "model": '"lenet_300_100"',
            "dataset": '"mnist"',
            "levels": levels,
            "rate": 0.2,
            "replicates": replicates,
        }
        for line in settings.splitlines():
            key, value = (p.strip() for p in line.split("=", 1))
            lines[key] = value
        (path / "config.toml").write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    wr = weights_remaining(levels)
    counts = layer_counts(levels)
    summary, metrics, layers = [], [], []
    for b in branches:
        for r in range(replicates):
            for lv in range(levels + 1):
                div = "700" if (b, r, lv) in diverged else ""
                end, at_es = acc_end(b, r, lv) + shift, es_acc(b, r, lv) + shift
                summary.append(
                    [b, r, lv, wr[lv], end, es_iter(b, r, lv), at_es, 99.0 - lv, div, 123]
                )
                for it in range(0, iterations + 1, eval_every):
                    train = (None, math.nan)[r % 2] if it == 0 else 0.5 * math.exp(-it / 100)
                    val = val_acc(b, r, lv, it) + shift
                    metrics.append(
                        [b, r, lv, it, wr[lv], train, val_loss(b, r, lv, it) + shift / 100]
                        + [val, val - 1.0]
                    )
                for name, rows, cols, _ in LAYERS:
                    kept, total = counts[lv][name], rows * cols
                    layers.append(
                        [b, r, lv, name, kept, total, 100.0 * kept / total, f"{rows}x{cols}"]
                    )
    _write(
        path / "summary.csv",
        [
            "branch",
            "replicate",
            "level",
            "weights_remaining",
            "test_acc",
            "early_stop_iteration",
            "test_acc_at_early_stop",
            "best_val_acc",
            "diverged_at",
            "extra",
        ],
        summary,
    )
    _write(
        path / "metrics.csv",
        [
            "branch",
            "replicate",
            "level",
            "iteration",
            "weights_remaining",
            "train_loss",
            "val_loss",
            "val_acc",
            "test_acc",
        ],
        metrics,
    )
    _write(
        path / "layers.csv",
        ["branch", "replicate", "level", "layer", "kept", "total", "remaining", "shape"],
        layers,
    )
    return path


# ---- from tests/core/test_training.py

F64 = {"rtol": 1e-9, "atol": 1e-10}


def synthetic_data(n: int = 240, shape=(1, 28, 28), seed: int = 0) -> SimpleNamespace:
    """Random images with a learnable rule, so losses move and accuracies mean something."""
    g = torch.Generator().manual_seed(seed)

    def split(m: int):
        x = torch.randn(m, *shape, generator=g)
        y = (x.flatten(1)[:, :10].argmax(1)).long()
        return x, y

    tx, ty = split(n)
    vx, vy = split(60)
    sx, sy = split(80)
    return SimpleNamespace(
        train_x=tx, train_y=ty, val_x=vx, val_y=vy, test_x=sx, test_y=sy, input_shape=shape
    )


def random_masks(model, seed: int, keep: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(p.shape, generator=g) < keep
        for n, p in model.named_parameters()
        if n.endswith("weight")
    }


def make_model(name: str, seed: int, shape=(1, 28, 28)):
    model = create_model(name, shape, 10)
    initialize(model, "xavier_normal", torch.Generator().manual_seed(seed))
    return model


# ---- from tests/runfolder/test_runs.py

CONFIG = ExperimentConfig(
    levels=2, iterations=30, eval_every=10, batch_size=20, val_size=100, max_parallel=2
)


# ---- from tests/runfolder/test_verify.py


def reseal(run: Path) -> None:
    """Rewrite the manifest after tampering, so that the specific check must catch it."""
    manifest = Manifest.load(run)
    manifest.files = {rel: file_sha256(run / rel) for rel in manifest.files}
    manifest.save()


def level_file(run: Path, branch: str, level: int, which: str) -> Path:
    return run / branch / "0" / f"level_{level:02d}" / f"{which}.safetensors"


def edit(run: Path, branch: str, level: int, which: str, change) -> None:
    path = level_file(run, branch, level, which)
    tensors = load_tensors(path)
    change(tensors)
    save_tensors(path, tensors)


def first(run: Path, branch: str, level: int, layer: str, kept: bool) -> int:
    """Flat index of the first weight of ``layer`` the mask keeps (or prunes)."""
    mask = load_tensors(level_file(run, branch, level, "mask"))[layer].bool().reshape(-1)
    return int((mask if kept else ~mask).nonzero()[0])


# ---- from tests/study/test_protocol.py


def mnist_slice(n_train: int, n_test: int, val_size: int = 300):
    """The first ``n_train`` training images of real MNIST (``val_size`` of them held out for
    validation) and its first ``n_test`` test images."""
    mnist = load_dataset("mnist", real_data(), val_size=0, seed=0)
    x, y = mnist.train_x[:n_train], mnist.train_y[:n_train]
    tx, ty = mnist.test_x[:n_test], mnist.test_y[:n_test]
    return dataset_from_tensors("mnist-small", x, y, tx, ty, val_size=val_size, seed=0)


def quick(**overrides) -> ExperimentConfig:
    base = dict(levels=1, iterations=60, eval_every=20, batch_size=50, val_size=300)
    return ExperimentConfig(**(base | overrides))


# ---- the settings of conftest's pruned_run (tests/runfolder/test_export.py reads it)

#: 3 levels x 200 iterations on MNIST, 75% of the hidden weights pruned per level (50% of the
#: output layer's) so that the last level has dead units; the reinit control.
PRUNED_RUN = ExperimentConfig(
    levels=3, iterations=200, eval_every=100, val_size=1000, rate=0.75, output_rate=0.5,
    controls=["reinit"],
)  # fmt: skip


#: the training-loop guide, whose code blocks the user-loop and Lightning tests run
LOOP_GUIDE = Path(__file__).parents[1] / "docs" / "guide" / "your-loop.md"


def guide_example(title: str) -> dict:
    """Run the loop guide's code block ``title`` (as a module, not as __main__); its names."""
    text = LOOP_GUIDE.read_text()
    found = re.search(rf'```python title="{re.escape(title)}"\n(.*?)\n```', text, re.S)
    assert found, f"{LOOP_GUIDE} has no block {title}"
    namespace = {"__name__": "your_loop_example"}
    exec(compile(found.group(1), f"{LOOP_GUIDE}:{title}", "exec"), namespace)
    return namespace
