"""``--precision bf16``: bfloat16 products, float32 everything else.

What is guaranteed, and tested here: the fp32 path is untouched (every other engine test runs
it); a bf16 step's gradients are those of float32 within bfloat16 rounding (8 bits of mantissa
in the operands, float32 accumulation); pruned weights, their gradients and optimizer state stay
exactly 0; a bf16 run is bit-identical from run to run and across a resume; its initial weights
are the fp32 run's, its masks prune exactly as many weights per layer. Its masks after training
are not identical to fp32's: the trained weights differ by bfloat16 rounding, so weights near the
pruning threshold can swap (measured on real MNIST: about 96% of the kept weights shared).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import assert_one_line
from helpers import make_model, random_masks, synthetic_data
from lth.config import ExperimentConfig
from lth.configfile import read_run_config
from lth.core.engine import StackedModel
from lth.core.fileio import load_tensors
from lth.core.kernels import compute_dtype, native_bf16
from lth.core.training import TicketJob, TrainConfig, Trainer
from lth.data import load_dataset
from lth.errors import LTHError

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures

BF16 = TrainConfig(iterations=30, batch_size=20, eval_every=10, precision="bf16")


def test_native_bf16_follows_the_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        assert native_bf16("cpu")
    assert not native_bf16("meta")


def test_precision_names_map_to_dtypes_and_a_slow_device_is_warned_once(capsys):
    assert compute_dtype("fp32") == torch.float32
    assert compute_dtype("bf16", "meta") == torch.bfloat16  # meta: no native bfloat16
    assert compute_dtype("bf16", "meta") == torch.bfloat16
    err = capsys.readouterr().err
    assert err.count("lth: warning:") == 1 and "slow" in err and len(err.splitlines()) == 1
    with pytest.raises(LTHError) as exc:
        compute_dtype("fp16")
    assert_one_line(exc, "fp32", "bf16")


def test_precision_setting_round_trips_and_refuses_others():
    config = ExperimentConfig(precision="bf16")
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert config.train_config(55_000).precision == "bf16"
    assert ExperimentConfig().precision == "fp32"
    with pytest.raises(LTHError) as exc:
        ExperimentConfig(precision="float16")
    assert_one_line(exc, "precision")


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 6))


def conv() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 6))


@pytest.mark.parametrize("make", [mlp, conv], ids=["mlp_handwritten", "conv_autograd"])
def test_bf16_gradients_are_float32_within_bfloat16_rounding(make):
    """Oracle: the float32 gradient of the same loss. bfloat16 operands (relative rounding 2^-9
    each) move it by ~1e-2 relative at most; a wrong gradient is ~1 off."""
    template = make()
    gen = torch.Generator().manual_seed(0)
    model = StackedModel(template, 3)
    shapes = {n: p.shape for n, p in template.named_parameters()}
    for i in range(3):
        model.load(i, {n: torch.randn(shape, generator=gen) for n, shape in shapes.items()})
    masks = {n: (torch.rand(p.shape, generator=gen) < 0.6).float() for n, p in model.params.items()
             if n.endswith("weight")}  # fmt: skip
    model.masks = masks
    shape = (3, 16, 2, 6, 6) if make is conv else (3, 16, 40)
    x, y = torch.randn(shape, generator=gen), torch.randint(0, 6, (3, 16), generator=gen)

    def grads(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        model.compute_dtype = dtype
        losses = model.loss_and_grad(x, y)
        return losses.clone(), model.grad_flat.clone()

    exact_loss, exact = grads(torch.float32)
    loss, grad = grads(torch.bfloat16)
    assert grad.dtype == torch.float32 and model.flat.dtype == torch.float32
    assert ((grad - exact).norm() / exact.norm()) < 2e-2
    assert ((loss - exact_loss) / exact_loss).abs().max() < 1e-2
    for name, mask in masks.items():  # pruned gradients exactly 0
        g = model.views(grad)[name]
        assert torch.equal(g[mask == 0], torch.zeros_like(g[mask == 0]))
    # float32 again: exactly the gradient it gave before bf16 ran
    assert torch.equal(grads(torch.float32)[1], exact)


@pytest.mark.parametrize("kernels", ["dense", "sparse"])
def test_bf16_keeps_pruned_weights_and_their_adam_state_exactly_zero(kernels):
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    masks = random_masks(model, 1, keep=0.3)
    cfg = dataclasses.replace(BF16, lr=1e-2, weight_decay=0.1, kernels=kernels)
    trainer = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, cfg)
    trainer.run()
    state = trainer.optimizer.state_dict()
    exp_avg = trainer.model.views(state["exp_avg"][0])
    for name, m in masks.items():
        w = trainer.model.params[name][0]
        assert w.dtype == torch.float32
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
        assert torch.equal(exp_avg[name][0][~m], torch.zeros_like(w[~m]))
        assert (w[m] != model.state_dict()[name][m]).float().mean() > 0.9  # survivors train


def test_bf16_is_bit_identical_from_run_to_run_and_across_a_resume():
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    masks = random_masks(model, 1)
    cfg = dataclasses.replace(BF16, iterations=40, batch_size=50)
    jobs = [TicketJob(model.state_dict(), masks, s) for s in (1, 2)]
    straight = Trainer(model, jobs, data, cfg).run()
    again = Trainer(model, jobs, data, cfg).run()
    first = Trainer(model, jobs, data, cfg)
    assert first.run(stop_at=17) is None
    second = Trainer(model, jobs, data, cfg)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    resumed = second.run()
    for a, b, c in zip(straight, again, resumed):
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name])
            assert torch.equal(a.final[name], c.final[name])
        assert repr(a.history) == repr(b.history) == repr(c.history)


def test_bf16_trains_lenet_on_real_mnist_as_well_as_fp32(data_dir, one_thread):
    data = load_dataset("mnist", data_dir, val_size=1000, download=False)
    model = make_model("lenet_300_100", 0)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if n.endswith("weight")}  # fmt: skip
    acc = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(iterations=150, batch_size=60, eval_every=150, precision=precision)
        result = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, cfg).run()
        acc[precision] = result[0].history.test_acc[-1]
    assert acc["fp32"] > 85 and abs(acc["bf16"] - acc["fp32"]) < 1.5, acc


def test_a_bf16_study_records_its_precision_verifies_and_prunes_like_fp32(tmp_path, data_dir,
                                                                          one_thread):  # fmt: skip
    from lth import run_experiment
    from lth.cli import main

    base = ExperimentConfig(levels=1, iterations=60, eval_every=30, val_size=1000, controls=())
    for precision in ("fp32", "bf16"):
        config = dataclasses.replace(base, precision=precision)
        run_experiment(config, out=tmp_path / precision, data_dir=data_dir, quiet=True)
    assert read_run_config(tmp_path / "bf16").precision == "bf16"
    assert main(["verify", str(tmp_path / "bf16")]) == 0

    def tensors(precision: str, level: int, which: str) -> dict[str, torch.Tensor]:
        path = tmp_path / precision / "ticket" / "0" / f"level_{level:02d}" / f"{which}.safetensors"
        return load_tensors(path)

    init32, init16 = tensors("fp32", 0, "init"), tensors("bf16", 0, "init")
    assert all(torch.equal(init32[n], init16[n]) for n in init32)
    masks32, masks16 = tensors("fp32", 1, "mask"), tensors("bf16", 1, "mask")
    for name, m32 in masks32.items():
        kept32, kept16 = m32.bool(), masks16[name].bool()
        assert kept32.sum() == kept16.sum()  # the same count pruned per layer, exactly
        assert (kept32 & kept16).sum() / kept32.sum() > 0.85  # mostly the same weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda_gives_the_float32_gradients_within_bfloat16_rounding():
    """On a GPU (native bfloat16) the same bf16 step: against the CPU's float32 gradient, the
    same tolerance as on the CPU; the weights and gradients stay float32; a short bf16
    training keeps the pruned weights at exactly 0."""
    template = mlp()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 16, 40, generator=gen), torch.randint(0, 6, (3, 16), generator=gen)
    weights = {n: torch.randn(p.shape, generator=gen) for n, p in template.named_parameters()}
    grads = {}
    for device, dtype in (("cpu", torch.float32), ("cuda", torch.bfloat16)):
        model = StackedModel(template, 3, device)
        for i in range(3):
            model.load(i, weights)
        model.compute_dtype = dtype
        model.loss_and_grad(x.to(device), y.to(device))
        assert model.grad_flat.dtype == torch.float32
        grads[device] = model.grad_flat.cpu()
    assert (grads["cuda"] - grads["cpu"]).norm() / grads["cpu"].norm() < 2e-2
    data = synthetic_data()
    on_gpu = SimpleNamespace(
        **{n: v.cuda() if torch.is_tensor(v) else v for n, v in vars(data).items()}
    )
    model = make_model("lenet_300_100", 0)
    masks = random_masks(model, 1, keep=0.3)
    trainer = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], on_gpu, BF16, "cuda")
    final = trainer.run()[0].final
    for name, m in masks.items():
        assert torch.equal(final[name][~m], torch.zeros_like(final[name][~m]))
