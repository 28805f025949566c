"""Inference of LeNet-300-100 tickets: file size and latency, dense against sparse and shrunk.

The tickets: LeNet-300-100 trained dense on real MNIST for ``--train-steps`` Adam steps, then
magnitude-pruned with :mod:`lth.pruning.selection` on the paper's schedule (20% of each hidden layer
and 10% of the output layer per level, so levels 0, 7, 15 and 20 leave 100%, 21.1%, 3.6% and
1.2% of the weights) in one go from the trained weights, then fine-tuned ``--finetune-steps``
Adam steps with the masks kept on (:func:`lth.pruning.masks.attach_masks`). These are not IMP
tickets (no rewinding, no retraining per level), but their masks are real magnitude masks of a
trained network, which is what file size and speed depend on; it takes about a minute, not an IMP
run.

For every ticket: the file size of each export format (dense, sparse, shrunk, shrunk-sparse)
and the latency at batch 1, 64 and 1,024 of

* ``dense``: the masked ``nn.Sequential`` (what ``load_ticket`` gives);
* ``sparse``: every pruned layer as a ``torch.sparse`` CSR matrix (no shrinking);
* ``shrunk``: the physically smaller ``nn.Sequential`` (:func:`lth.pruning.shrink.shrink`);
* ``best``: :func:`lth.pruning.sparse.sparse_inference` for that batch size: shrunk, then each
  layer's kernel chosen by its density and the batch size.

Latencies are medians over ``--repeats`` rounds in which the four take turns, so that each
sees the same moments of a shared machine's noise; ratios are medians of the per-round ratios.
Outputs are checked against the dense model on the whole test set. Prints a table, then one
JSON line. Run: ``python benchmarks/inference.py [--data-dir ../shared/data] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lth.core.models import create_model
from lth.data import load_dataset
from lth.pruning.masks import apply_masks, attach_masks, detach_masks, ones_mask, remaining_fraction
from lth.pruning.selection import prune_layerwise
from lth.pruning.shrink import shrink
from lth.pruning.sparse import sparse_inference
from lth.runfolder.export import export_bytes

TARGETS = (100.0, 21.0, 3.6, 1.2)  # percent of weights remaining
RATES = {"fc1.weight": 0.2, "fc2.weight": 0.2, "fc3.weight": 0.1}  # per level (the paper's)
VARIANTS = ("dense", "sparse", "shrunk", "best")
FORMATS = {"dense": "dense", "sparse": "sparse", "shrunk": "shrunk", "best": "shrunk-sparse"}


def adam_steps(model: torch.nn.Module, data, steps: int, seed: int) -> None:
    """``steps`` Adam steps (lr 1.2e-3, batch 60) on random training images."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, data.train_x.shape[0], (60,), generator=g)
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def train(data, steps: int, seed: int) -> torch.nn.Module:
    """LeNet-300-100 trained dense for ``steps`` steps."""
    model = create_model("lenet_300_100", generator=seed)
    adam_steps(model, data, steps, seed)
    return model


def finetune(model: torch.nn.Module, masks: dict, data, steps: int, seed: int) -> None:
    """Retrain a pruned ticket for ``steps`` steps with its masks kept on
    (:func:`lth.pruning.masks.attach_masks`), in place."""
    attach_masks(model, masks)
    adam_steps(model, data, steps, seed + 1)
    detach_masks(model)


def tickets(model: torch.nn.Module) -> dict[float, tuple[int, dict]]:
    """For each target, the level of the schedule closest to it and its masks."""
    weights = {n: p.detach() for n, p in model.named_parameters()}
    masks = ones_mask(model)
    chain = [masks]
    while 100 * remaining_fraction(chain[-1]) > min(TARGETS) * 0.8:
        chain.append(prune_layerwise(weights, chain[-1], RATES))
    found = {}
    for target in TARGETS:
        level = min(
            range(len(chain)), key=lambda i: abs(100 * remaining_fraction(chain[i]) - target)
        )
        found[target] = (level, chain[level])
    return found


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, seconds: float = 0.01):
    """Seconds per call of each function, the functions taking turns; each timing runs as
    many calls as take about ``seconds`` (at least one)."""
    inner = {}
    for name, fn in fns.items():
        for _ in range(2):
            fn()
        start = time.perf_counter()
        fn()
        inner[name] = max(1, min(1000, round(seconds / (time.perf_counter() - start))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            times[name].append((time.perf_counter() - start) / inner[name])
    return times


def ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a / b, for times taken in turns."""
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--finetune-steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--batches", default="1,64,1024")
    parser.add_argument("--threads", type=int, default=1, help="0: PyTorch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    data = load_dataset("mnist", args.data_dir, val_size=5000, seed=args.seed)
    trained = train(data, args.train_steps, args.seed)
    x_test = data.test_x
    rows, result = [], {}
    for target, (level, masks) in tickets(trained).items():
        model = create_model("lenet_300_100")
        model.load_state_dict(trained.state_dict())
        apply_masks(model, masks)
        if level:
            finetune(model, masks, data, args.finetune_steps, args.seed)
        model.eval()
        small = shrink(model, masks)
        with torch.inference_mode():
            reference = model(x_test)
            acc = (reference.argmax(1) == data.test_y).double().mean().item() * 100
        sizes = {v: len(export_bytes(model, masks, FORMATS[v])[0]) for v in VARIANTS}
        latency: dict[int, dict[str, float]] = {}
        ratios: dict[int, dict[str, float]] = {}
        kernels: dict[int, str] = {}
        worst = 0.0
        for batch in batches:
            variants = {
                "dense": model,
                "sparse": sparse_inference(model, masks, shrink_first=False, threshold=1.0),
                "shrunk": small.model.eval(),
                "best": sparse_inference(model, masks, batch_size=batch),
            }
            x = x_test[:batch].contiguous()
            with torch.inference_mode():
                for name, v in variants.items():  # the same outputs, on the whole test set
                    if name == "best" or batch == batches[0]:  # only best depends on the batch
                        worst = max(worst, (v(x_test) - reference).abs().max().item())
                fns = {v: (lambda f=f, x=x: f(x)) for v, f in variants.items()}
                times = interleaved(fns, args.repeats)
            assert worst < 1e-4, f"outputs differ by {worst}"
            latency[batch] = {v: statistics.median(t) * 1e3 for v, t in times.items()}
            ratios[batch] = {v: ratio(times[v], times["dense"]) for v in VARIANTS}
            kernels[batch] = ",".join(f"{r['layer']}:{r['kernel']}" for r in variants["best"].plan)
        remaining = 100 * remaining_fraction(masks)
        result[target] = {
            "level": level,
            "weights_remaining": remaining,
            "test_acc": acc,
            "units_removed": small.removed,
            "unused_inputs": small.unused_inputs,
            "kernels": {str(b): k for b, k in kernels.items()},
            "file_bytes": sizes,
            "latency_ms": {str(b): v for b, v in latency.items()},
            "latency_ratio": {str(b): v for b, v in ratios.items()},
            "max_abs_diff": worst,
        }
        rows.append((target, level, remaining, acc, small, sizes, latency, ratios, kernels))
    print(
        f"LeNet-300-100 tickets on MNIST: trained dense {args.train_steps} steps, "
        f"magnitude-pruned, masked fine-tune {args.finetune_steps} steps; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    print()
    print("| weights | level | test acc | units removed (fc1, fc2) | file: dense | sparse |"
          " shrunk | shrunk-sparse |")  # fmt: skip
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for _, level, remaining, acc, small, sizes, *_ in rows:
        d = sizes["dense"]
        removed = f"{small.removed['fc1.weight']}, {small.removed['fc2.weight']}"
        cells = [f"{remaining:.1f}%", str(level), f"{acc:.2f}%", removed, f"{d / 1024:,.0f} KB"]
        cells += [f"{sizes[v] / 1024:,.0f} KB ({sizes[v] / d:.1%})" for v in VARIANTS[1:]]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| weights | batch | dense ms | sparse ms (x dense) | shrunk ms (x dense) |"
          " best ms (x dense) | best: kernels |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---|")
    for _, _, remaining, _, _, _, latency, ratios, kernels in rows:
        for batch in batches:
            lat, rat = latency[batch], ratios[batch]
            cells = [f"{remaining:.1f}%", str(batch), f"{lat['dense']:.3f}"]
            cells += [f"{lat[v]:.3f} ({rat[v]:.2f}x)" for v in VARIANTS[1:]]
            print("| " + " | ".join(cells + [kernels[batch]]) + " |")
    print()

    def best_file(target: float) -> float:
        sizes = result[target]["file_bytes"]
        return min(sizes[v] for v in VARIANTS[1:]) / sizes["dense"]

    def ratio_of(target: float, batch: int, variant: str) -> float | None:
        return result[target]["latency_ratio"].get(str(batch), {}).get(variant)

    def best_latency(target: float, batch: int) -> float:
        return min(result[target]["latency_ratio"][str(batch)][v] for v in VARIANTS[1:])

    summary = {
        "file_ratio_at_3.6": best_file(3.6),
        "file_ratio_at_1.2": best_file(1.2),
        "latency_ratio_at_3.6_b1024": best_latency(3.6, 1024) if 1024 in batches else None,
        "latency_ratio_at_1.2_b1024": best_latency(1.2, 1024) if 1024 in batches else None,
        "inference_ratio_at_3.6_b1024": ratio_of(3.6, 1024, "best"),
        "inference_ratio_at_1.2_b1024": ratio_of(1.2, 1024, "best"),
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_steps": args.train_steps,
        "repeats": args.repeats,
        "tickets": {str(t): v for t, v in result.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
