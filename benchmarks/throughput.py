"""Training throughput of lth against the machine's own limit and against the common way.

Measures on real MNIST and LeNet-300-100, Adam, ~50% of weights pruned (magnitude, so the
masks are real): lth's masked training of one ticket (batch 60 and 128); K tickets at once;
the usual DataLoader + per-sample transform + torch.optim + mask-after-step loop; and the
machine's reference figures: the same matrix products as one step, back to back on
preallocated tensors, and one large float32 matrix product. Prints a table, then one JSON
line. Run: ``python benchmarks/throughput.py [--device cuda] [--data-dir ../shared/data]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lth.core.init import initialize
from lth.core.kernels import cpu_model
from lth.core.models import create_model, output_layer
from lth.core.training import TicketJob, TrainConfig, Trainer
from lth.data import load_dataset
from lth.pruning.masks import ones_mask
from lth.pruning.policy import derive_seed
from lth.pruning.selection import layer_rates, prune_layerwise, prune_random_like

DIMS = (784, 300, 100, 10)


def timed(fn: Callable[[], None], sync: Callable[[], None], steps: int, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs of ``steps`` calls, after warm-up."""
    for _ in range(max(3, steps // 5)):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def interleaved(
    fns: dict[str, tuple[Callable[[], None], int]], sync: Callable[[], None], repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each ``fn`` (``steps`` calls per timing), the functions taking turns.

    Timing them in turns, rather than one after the other, exposes each to the same moments
    of a shared machine's noise, so the ratios of the per-round times are steadier.
    """
    for fn, steps in fns.values():
        for _ in range(max(3, steps // 5)):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, steps) in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) / steps)
    return times


def weights_count() -> int:
    return sum(i * o for i, o in zip(DIMS[:-1], DIMS[1:]))


def step_flops(batch: int) -> int:
    """3 matrix products (forward, weight grad, input grad) x 2 FLOP per multiply-add."""
    return 3 * 2 * batch * weights_count()


def make_jobs(
    k: int, levels: int = 1, rate: float = 0.5, output_rate: float = 0.5, controls: bool = False
) -> tuple[torch.nn.Module, list[TicketJob]]:
    """K LeNet-300-100 tickets pruned by magnitude ``levels`` times (``rate`` of each hidden
    layer's survivors, ``output_rate`` of the output layer's); with ``controls`` every third is
    a random-pruning control (random masks, the same per-layer counts)."""
    template = create_model("lenet_300_100")
    jobs = []
    for i in range(k):
        model = create_model("lenet_300_100")
        initialize(model, "xavier_normal", torch.Generator().manual_seed(derive_seed(0, i)))
        weights = {n: p.detach() for n, p in model.named_parameters()}
        masks = ones_mask(model)
        rates = layer_rates(list(masks), rate, output_rate, output_layer(model))
        for _ in range(levels):
            masks = prune_layerwise(weights, masks, rates)
        if controls and i % 3 == 2:
            masks = prune_random_like(masks, generator=torch.Generator().manual_seed(i))
        jobs.append(TicketJob(weights, masks, seed=i))
    return template, jobs


def lth_step(data, k: int, batch: int, device) -> Callable[[], None]:
    """One training step of K tickets."""
    template, jobs = make_jobs(k)
    trainer = Trainer(template, jobs, data, TrainConfig(iterations=10**9, batch_size=batch), device)
    return trainer.step


def bench_lth(data, k: int, batch: int, device, sync, steps: int, repeats: int) -> float:
    return timed(lth_step(data, k, batch, device), sync, steps, repeats)


def gemm_step(batch: int, device, sync) -> Callable[[], None]:
    """The step's matrix products alone, in the faster of row-major and feature-major layouts."""
    best, best_fn = float("inf"), None
    for feature_major in (False, True):
        ws = [torch.randn(o, i, device=device) for i, o in zip(DIMS[:-1], DIMS[1:])]
        if feature_major:
            acts = [torch.randn(d, batch, device=device) for d in DIMS]
        else:
            acts = [torch.randn(batch, d, device=device) for d in DIMS]
        outs = [torch.empty_like(a) for a in acts]
        gws = [torch.empty_like(w) for w in ws]

        def products(ws=ws, acts=acts, outs=outs, gws=gws, fm=feature_major) -> None:
            for li, w in enumerate(ws):
                if fm:
                    torch.mm(w, acts[li], out=outs[li + 1])
                else:
                    torch.mm(acts[li], w.t(), out=outs[li + 1])
            for li, w in enumerate(ws):
                if fm:
                    torch.mm(acts[li + 1], acts[li].t(), out=gws[li])
                    if li > 0:
                        torch.mm(w.t(), acts[li + 1], out=outs[li])
                else:
                    torch.mm(acts[li + 1].t(), acts[li], out=gws[li])
                    if li > 0:
                        torch.mm(acts[li + 1], w, out=outs[li])

        t = timed(products, sync, 50, 3)
        if t < best:
            best, best_fn = t, products
    assert best_fn is not None
    return best_fn


def bench_peak(device, sync, repeats: int, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    seconds = timed(lambda: torch.mm(a, b, out=c), sync, 5, repeats)
    return 2 * n**3 / seconds


def to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision's ``ToTensor`` for a PIL image, line for line (torchvision is not installed)."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision's ``Normalize`` on a tensor, line for line."""
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if (std == 0).any():
        raise ValueError("std evaluated to zero")
    if mean.ndim == 1:
        mean = mean.view(-1, 1, 1)
    if std.ndim == 1:
        std = std.view(-1, 1, 1)
    return tensor.sub_(mean).div_(std)


class PerSampleMNIST(torch.utils.data.Dataset):
    """torchvision's MNIST dataset: a PIL image per item, then ToTensor and Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.data, self.targets = images, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        return normalize(to_tensor(img), (0.1307,), (0.3081,)), target


def dataloader_step(data, batch: int, device) -> Callable[[], None]:
    """One step of the common loop: DataLoader, nn.Module, torch.optim, masks after the step."""
    raw = ((data.train_x.cpu() * 0.3081 + 0.1307) * 255).round().clamp(0, 255)
    images = raw.to(torch.uint8).squeeze(1)
    labels = data.train_y.cpu()
    loader = torch.utils.data.DataLoader(
        PerSampleMNIST(images, labels), batch_size=batch, shuffle=True, drop_last=True
    )
    _, jobs = make_jobs(1)
    model = create_model("lenet_300_100").to(device)
    model.load_state_dict(jobs[0].init)
    masks = {n: m.to(device).float() for n, m in jobs[0].masks.items()}
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m)

    return step


def ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a / b, for times taken in turns."""
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ks", default="2,4,8,16")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data = load_dataset("mnist", args.data_dir, device=device)
    steps, reps = args.steps, args.repeats

    rows = []
    peak = bench_peak(device, sync, reps)
    rows.append(("reference: one 2048^2 float32 matmul", None, None, peak))
    # the three figures that make the single-ticket ratios, timed in turns
    times = interleaved(
        {
            "lth": (lth_step(data, 1, 60, device), steps),
            "gemm": (gemm_step(60, device, sync), steps),
            "dataloader": (dataloader_step(data, 60, device), max(5, steps // 5)),
        },
        sync,
        reps,
    )
    single = {60: statistics.median(times["lth"])}
    gemm = statistics.median(times["gemm"])
    dl = statistics.median(times["dataloader"])
    single[128] = bench_lth(data, 1, 128, device, sync, steps, reps)
    for batch, t in single.items():
        rows.append((f"lth, one ticket, batch {batch}", t, batch / t, step_flops(batch) / t))
    rows.append(
        ("reference: the step's matrix products, batch 60", gemm, 60 / gemm, step_flops(60) / gemm)
    )
    batched = {}
    for k in (int(s) for s in args.ks.split(",")):
        t = bench_lth(data, k, 60, device, sync, max(5, steps // k), reps)
        batched[k] = t
        rows.append((f"lth, {k} tickets at once, batch 60", t, k * 60 / t, k * step_flops(60) / t))
    rows.append(("common way: DataLoader + torch.optim + mask", dl, 60 / dl, step_flops(60) / dl))

    print(f"{'what':52s} {'ms/step':>9s} {'samples/s':>11s} {'GFLOP/s':>9s}")
    for name, t, sps, flops in rows:
        ms = "" if t is None else f"{t * 1e3:9.3f}"
        sp = "" if sps is None else f"{sps:11.0f}"
        print(f"{name:52s} {ms:>9s} {sp:>11s} {flops / 1e9:9.1f}")

    best_k = max(batched, key=lambda k: k * step_flops(60) / batched[k])
    result = {
        "single_vs_same_gemms": round(ratio(times["gemm"], times["lth"]), 3),
        "batched_vs_peak": round(best_k * step_flops(60) / batched[best_k] / peak, 3),
        "speedup_vs_dataloader": round(ratio(times["dataloader"], times["lth"]), 2),
        "best_k": best_k,
        "single_samples_per_s": {b: round(b / t) for b, t in single.items()},
        "batched_samples_per_s": {k: round(k * 60 / t) for k, t in batched.items()},
        "peak_gflops": round(peak / 1e9, 1),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
