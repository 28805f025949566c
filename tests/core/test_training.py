"""Masked training: the stacked engine against plain PyTorch (nn.Module + torch.optim) as oracle."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import F64, make_model, random_masks, synthetic_data
from lth.core.engine import StackedModel, bmm, mlp_layers
from lth.core.models import create_model
from lth.core.optim import learning_rate
from lth.core.training import TicketJob, TrainConfig, Trainer, train
from lth.errors import LTHError
from lth.pruning.selection import prune_random_like

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


# Engine against oracle in float64: measured ~1e-13 apart after training, 1e-3 for a real bug.


def oracle_train(model, masks, data, cfg: TrainConfig, seed: int):
    """The textbook loop: nn.Module, torch.optim, gradients masked before each step."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.masked_fill_(~masks[n], 0.0)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    gen = torch.Generator().manual_seed(seed)
    n, b = data.train_x.shape[0], cfg.batch_size
    per_epoch = n // b
    for it in range(cfg.iterations):
        if it % per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[(it % per_epoch) * b : (it % per_epoch + 1) * b]
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg.lr, it, cfg.milestones, cfg.gamma, cfg.warmup)
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            if name in masks:
                p.grad.mul_(masks[name])
        opt.step()
    return {n: t.detach() for n, t in model.state_dict().items()}


CONFIGS = {
    "adam_wd": TrainConfig(iterations=25, batch_size=20, eval_every=10, weight_decay=1e-2),
    "sgd_momentum_schedule": TrainConfig(
        iterations=25,
        batch_size=20,
        eval_every=10,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        milestones=(10, 20),
        warmup=5,
    ),
}


@pytest.mark.parametrize("model_name", ["lenet_300_100", "lenet5"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("k", [1, 3])
def test_stacked_training_matches_plain_pytorch(model_name, cfg_name, k, float64):
    cfg = CONFIGS[cfg_name]
    data = synthetic_data()
    models = [make_model(model_name, seed) for seed in range(k)]
    masks = [random_masks(m, 10 + i) for i, m in enumerate(models)]
    jobs = [
        TicketJob(m.state_dict(), mk, seed=100 + i) for i, (m, mk) in enumerate(zip(models, masks))
    ]
    trainer = Trainer(models[0], jobs, data, cfg)
    assert trainer.model.flat.dtype == torch.float64, "the engine must train in double here"
    results = trainer.run()
    for i in range(k):
        expected = oracle_train(models[i], masks[i], data, cfg, seed=100 + i)
        for name, w in expected.items():
            assert results[i].final[name].dtype == torch.float64
            torch.testing.assert_close(results[i].final[name], w, **F64)
            if name in masks[i]:
                pruned = results[i].final[name][~masks[i][name]]
                assert torch.equal(pruned, torch.zeros_like(pruned)), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_name", ["lenet_300_100", "lenet5"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_cuda_training_matches_cpu(model_name, cfg_name, float64):
    """Everything on the GPU: same data order, same results as on the CPU up to float rounding.

    In double: float32 GPU kernels sum in other orders (and cuDNN may use TF32).
    """
    cfg, k = CONFIGS[cfg_name], 3
    data = synthetic_data()
    on_gpu = SimpleNamespace(
        **{n: v.cuda() if torch.is_tensor(v) else v for n, v in vars(data).items()}
    )
    models = [make_model(model_name, seed) for seed in range(k)]
    jobs = [TicketJob(m.state_dict(), random_masks(m, 10 + i), 100 + i) for i, m in
            enumerate(models)]  # fmt: skip
    cpu = Trainer(models[0], jobs, data, cfg).run()
    gpu_trainer = Trainer(models[0], jobs, on_gpu, cfg, device="cuda")
    assert gpu_trainer.model.flat.is_cuda and gpu_trainer.optimizer.params[0].is_cuda
    assert gpu_trainer.model.flat.dtype == torch.float64
    gpu = gpu_trainer.run()
    for c, g, job in zip(cpu, gpu, jobs):
        for name, w in c.final.items():
            torch.testing.assert_close(g.final[name], w, **F64)
            if name in job.masks:
                pruned = g.final[name][~job.masks[name]]
                assert torch.equal(pruned, torch.zeros_like(pruned)), name
        assert g.history.iteration == c.history.iteration
        assert g.history.test_loss == pytest.approx(c.history.test_loss, rel=1e-9)


@pytest.mark.parametrize("kernels", ["dense", "sparse"])
def test_pruned_weights_stay_exactly_zero_with_adam_and_weight_decay(kernels):
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    # Negative and positive survivors alike must train: nothing is frozen by sign.
    masks = random_masks(model, 1, keep=0.3)
    cfg = TrainConfig(
        iterations=60, batch_size=20, eval_every=20, lr=1e-2, weight_decay=0.1, kernels=kernels
    )
    trainer = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, cfg)
    trainer.run()
    assert bool(trainer.model.patterns) == (kernels == "sparse")
    # The optimizer's state in the dense layout (the sparse path keeps the survivors' alone).
    state = trainer.optimizer.state_dict()
    exp_avg = trainer.model.views(state["exp_avg"][0])
    exp_avg_sq = trainer.model.views(state["exp_avg_sq"][0])
    for name, m in masks.items():
        w = trainer.model.params[name][0]
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
        assert torch.equal(exp_avg[name][0][~m], torch.zeros_like(w[~m]))
        assert torch.equal(exp_avg_sq[name][0][~m], torch.zeros_like(w[~m]))
        init = model.state_dict()[name]
        moved = (w != init) & m
        assert moved[(init < 0) & m].float().mean() > 0.9, "negative survivors must keep training"
        assert moved[(init > 0) & m].float().mean() > 0.9


def test_each_ticket_keeps_its_own_data_order_and_mask(float64):
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    mask = random_masks(model, 1)
    cfg = TrainConfig(iterations=15, batch_size=20, eval_every=5)
    same = [TicketJob(model.state_dict(), mask, 7), TicketJob(model.state_dict(), mask, 7)]
    other = [TicketJob(model.state_dict(), mask, 7), TicketJob(model.state_dict(), mask, 8)]
    a = Trainer(model, same, data, cfg).run()
    b = Trainer(model, other, data, cfg).run()
    # Same seed: same batches, so the same weights (up to the rounding of batched products:
    # a ticket's product may run in another kernel than its neighbour's).
    torch.testing.assert_close(a[0].final["fc1.weight"], a[1].final["fc1.weight"], **F64)
    assert (b[0].final["fc1.weight"] - b[1].final["fc1.weight"]).abs().max() > 1e-3


def test_training_is_bit_identical_from_run_to_run():
    data = synthetic_data()
    model = make_model("lenet5", 3)
    masks = random_masks(model, 4)
    cfg = TrainConfig(iterations=20, batch_size=20, eval_every=10)
    runs = []
    for _ in range(2):
        jobs = [TicketJob(model.state_dict(), masks, s) for s in (1, 2)]
        runs.append(Trainer(model, jobs, data, cfg).run())
    for r1, r2 in zip(*runs):
        for name in r1.final:
            assert torch.equal(r1.final[name], r2.final[name])
        assert repr(r1.history) == repr(r2.history)


def test_resume_from_state_dict_is_bit_identical():
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    masks = random_masks(model, 1)
    cfg = TrainConfig(iterations=40, batch_size=50, eval_every=10)  # 4 steps per epoch
    jobs = [TicketJob(model.state_dict(), masks, s) for s in (1, 2)]
    straight = Trainer(model, jobs, data, cfg).run()
    first = Trainer(model, jobs, data, cfg)
    assert first.run(stop_at=17) is None
    state = copy.deepcopy(first.state_dict())
    second = Trainer(model, jobs, data, cfg)
    second.load_state_dict(state)
    resumed = second.run()
    for a, b in zip(straight, resumed):
        for name in a.final:
            assert torch.equal(a.final[name], b.final[name])
        assert repr(a.history) == repr(b.history)


def test_history_records_evaluations_and_early_stop():
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    cfg = TrainConfig(iterations=45, batch_size=20, eval_every=10, lr=3e-3)
    ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    result = train(model, {n: m for n, m in ones.items() if "weight" in n}, data, cfg)
    h = result.history
    assert h.iteration == [0, 10, 20, 30, 40, 45]
    assert all(0 <= a <= 100 for a in h.val_acc + h.test_acc)
    es = h.early_stop_index()
    assert h.val_loss[es] == min(h.val_loss[1:])
    s = h.summary()
    assert s["early_stop_iteration"] == h.iteration[es]
    assert s["test_acc_at_early_stop"] == h.test_acc[es]
    assert s["best_val_acc"] == max(h.val_acc)
    assert h.train_loss[-1] < h.train_loss[1], "training should reduce the loss"
    # train() writes the trained weights back into the module
    assert torch.equal(model.fc1.weight.detach(), result.final["fc1.weight"])


def grouped_conv_net() -> torch.nn.Sequential:
    """A conv net of grouped convolutions (groups=2) over 2-channel images."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, groups=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, groups=2),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 12 * 12, 10),
    )


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "conv2", "grouped"])
def test_evaluation_matches_plain_forward(name, float64):
    data = synthetic_data(shape=(2, 28, 28) if name == "grouped" else (1, 28, 28))
    if name == "grouped":
        models = [grouped_conv_net() for _ in range(2)]
    else:
        models = [make_model(name, s) for s in (0, 1)]
    masks = [random_masks(m, 5) for m in models]
    jobs = [TicketJob(m.state_dict(), mk, 0) for m, mk in zip(models, masks)]
    trainer = Trainer(models[0], jobs, data, TrainConfig(iterations=1))
    trainer.eval_chunk = 7  # exercise chunking
    losses, accs = trainer.evaluate(data.test_x, data.test_y)
    for i, (m, mk) in enumerate(zip(models, masks)):
        ref = copy.deepcopy(m)
        with torch.no_grad():
            for n, p in ref.named_parameters():
                if n in mk:
                    p.masked_fill_(~mk[n], 0.0)
            logits = ref(data.test_x)
        assert losses[i] == pytest.approx(F.cross_entropy(logits, data.test_y).item(), rel=1e-10)
        expected = (logits.argmax(1) == data.test_y).float().mean().item() * 100
        assert accs[i] == pytest.approx(expected)


MLPS = {
    "lenet_300_100": lambda: create_model("lenet_300_100"),
    "no_bias_no_relu": lambda: torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 40, bias=False),
        torch.nn.Linear(40, 30),
        torch.nn.ReLU(),
        torch.nn.Linear(30, 10, bias=False),
    ),
    "one_layer": lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)),
}


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", list(MLPS))
def test_handwritten_mlp_backward_matches_autograd(name, k, float64):
    torch.manual_seed(0)
    template = MLPS[name]()
    fast = StackedModel(template, k)
    slow = StackedModel(template, k)
    assert fast.mlp is not None and fast.flat.dtype == torch.float64
    slow.mlp = None  # force the autograd path
    for i in range(k):
        state = {n: torch.randn(p.shape) for n, p in template.named_parameters()}
        fast.load(i, state)
        slow.load(i, state)
    x = torch.randn(k, 20, 1, 28, 28)
    y = torch.randint(0, 10, (k, 20))
    losses_fast = fast.loss_and_grad(x, y)
    losses_slow = slow.loss_and_grad(x, y)
    torch.testing.assert_close(losses_fast, losses_slow, rtol=1e-12, atol=0)
    for n in fast.grads:
        # An entry can be a near-cancelling sum of large terms: a tolerance relative to the
        # tensor's largest entry, not to each entry (measured ~1e-15 apart in double).
        scale = slow.grads[n].abs().amax()
        torch.testing.assert_close(fast.grads[n], slow.grads[n], rtol=0, atol=1e-10 * scale)
        assert fast.grads[n].abs().sum() > 0, f"{n}: an all-zero gradient proves nothing"


U32 = 2.0**-24  # float32's unit roundoff


def gamma(n: int) -> float:
    """Bound on the relative error of an n-term float32 sum, in any order, with or without FMA."""
    return n * U32 / (1 - n * U32)


@pytest.mark.parametrize("k", [1, 3])
def test_float32_one_layer_gradients_are_within_float32_rounding(k):
    """One float32 step of softmax regression, hand-written and autograd, against the exact
    (float64) loss and gradients, within bounds derived from the sums' size that any kernel
    and summation order meets: the logits ``z = Wx + b`` are off by at most
    ``gamma(785) (|W||x| + |b|)``, log-softmax by at most twice the largest logit error (plus
    a few roundings), and ``dW = d x^T``, ``db = sum(d)`` add ``gamma(batch)`` of their sums
    of magnitudes. (Through deeper networks such bounds compound past usefulness: those are
    compared in float64.)
    """
    torch.manual_seed(0)
    template = MLPS["one_layer"]()
    fast, slow = StackedModel(template, k), StackedModel(template, k)
    slow.mlp = None  # force the autograd path
    assert fast.mlp is not None and fast.flat.dtype == torch.float32
    inits = [MLPS["one_layer"]().state_dict() for _ in range(k)]  # PyTorch's default init
    for i, state in enumerate(inits):
        fast.load(i, state)
        slow.load(i, state)
    batch = 20
    x, y = torch.randn(k, batch, 1, 28, 28), torch.randint(0, 10, (k, batch))
    losses = {"hand-written": fast.loss_and_grad(x, y), "autograd": slow.loss_and_grad(x, y)}
    grads = {"hand-written": fast.grads, "autograd": slow.grads}
    for i in range(k):
        w, b = inits[i]["1.weight"].double(), inits[i]["1.bias"].double()
        xs = x[i].reshape(batch, -1).double()
        exact_w, exact_b = w.clone().requires_grad_(), b.clone().requires_grad_()
        z = xs @ exact_w.t() + exact_b
        exact_loss = F.cross_entropy(z, y[i])
        exact_loss.backward()
        z = z.detach()
        z_err = gamma(w.shape[1] + 1) * (xs.abs() @ w.abs().t() + b.abs())  # (batch, classes)
        log_p_err = 2 * z_err.amax(1, keepdim=True) + 8 * U32 * (1 + z.abs().amax(1, keepdim=True))
        d = (torch.softmax(z, 1) - F.one_hot(y[i], 10)) / batch  # dloss/dz
        d_err = log_p_err / batch + 2 * U32 * d.abs()  # |dp| <= p |d log p| <= |d log p|
        d_mag = d.abs() + d_err
        bounds = {
            "1.weight": gamma(batch) * d_mag.t() @ xs.abs() + d_err.t() @ xs.abs(),
            "1.bias": gamma(batch) * d_mag.sum(0) + d_err.sum(0),
        }
        exact = {"1.weight": exact_w.grad, "1.bias": exact_b.grad}
        loss_bound = log_p_err.mean().item() + gamma(batch + 1) * exact_loss.item()
        for path in losses:
            assert abs(losses[path][i].item() - exact_loss.item()) <= loss_bound, path
            for name, bound in bounds.items():
                assert bound.max() < 0.05 * exact[name].abs().max(), "a loose bound proves nothing"
                got = grads[path][name][i].reshape(bound.shape).double()
                excess = ((got - exact[name]).abs() / bound).max().item()
                assert excess <= 1, f"{path} {name} gradient off by {excess:.3g} times its bound"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_thread_balanced_bmm_matches_torch(k, threads, dtype):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, bias = torch.randn(k, 7, 5, dtype=dtype), torch.randn(k, 7, 1, dtype=dtype)
        b = torch.randn(k, 6, 9, dtype=dtype).transpose(1, 2)[:, :5]  # strided, as in the engine
        # mm and bmm may sum the 5 products (and the bias) in other orders: each is within
        # gamma(6) = 6 unit roundoffs (3 eps) of the sums of magnitudes, so both within 6 eps.
        eps = torch.finfo(dtype).eps
        size = torch.bmm(a.abs(), b.abs())

        def check(got, want, magnitude):
            assert got.dtype == dtype
            assert ((got - want).abs() <= 6 * eps * magnitude).all(), (got - want).abs().max()

        check(bmm(a, b), torch.bmm(a, b), size)
        check(bmm(a, b, bias), torch.baddbmm(bias, a, b), size + bias.abs())
        out = torch.full((k, 7, 6), float("nan"), dtype=dtype)
        assert bmm(a, b, bias, out=out) is out
        check(out, torch.baddbmm(bias, a, b), size + bias.abs())
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "layers",
    [
        [torch.nn.Linear(784, 10)],  # no Flatten first
        [torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.ReLU()],  # ends in ReLU
        [torch.nn.Flatten(), torch.nn.ReLU(), torch.nn.Linear(784, 10)],  # ReLU first
        [torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(1352, 10)],
    ],
)
def test_non_mlp_layers_take_the_autograd_path(layers):
    assert mlp_layers(list(torch.nn.Sequential(*layers).named_children())) is None


def test_old_checkpoint_format_is_refused_in_one_line():
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    trainer = Trainer(model, [TicketJob(model.state_dict(), random_masks(model, 1), 0)], data,
                      TrainConfig(iterations=2))  # fmt: skip
    state = trainer.state_dict()
    state.pop("format")
    with pytest.raises(LTHError, match="another version of lth"):
        trainer.load_state_dict(state)


def test_divergence_is_detected_and_recorded():
    data = synthetic_data()
    model = make_model("lenet_300_100", 0)
    masks = random_masks(model, 1)
    cfg = TrainConfig(iterations=30, batch_size=20, eval_every=10, optimizer="sgd", lr=1e6)
    good = TrainConfig(iterations=30, batch_size=20, eval_every=10)
    bad = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, cfg).run()[0]
    assert bad.history.diverged_at is not None
    assert all(v == v for v in bad.history.val_loss), "recorded evaluations are finite"
    ok = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, good).run()[0]
    assert ok.history.diverged_at is None


def test_random_masks_from_pruning_train_in_conv_models():
    data = synthetic_data(shape=(3, 32, 32))
    model = make_model("conv2", 0, shape=(3, 32, 32))
    ones = {n: torch.ones_like(p, dtype=torch.bool)
            for n, p in model.named_parameters() if "weight" in n}  # fmt: skip
    ref = {n: m.clone() for n, m in ones.items()}
    for m in ref.values():
        m.view(-1)[: m.numel() // 2] = False
    masks = prune_random_like(ref, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(iterations=3, batch_size=8, eval_every=3)
    result = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, cfg).run()[0]
    for n, m in masks.items():
        assert torch.equal(result.final[n][~m], torch.zeros(int((~m).sum())))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"iterations": 0},
        {"batch_size": -1},
        {"optimizer": "adagrad"},
        {"lr": 0.0},
        {"momentum": 1.5},
        {"weight_decay": -1.0},
        {"eval_every": 2.5},
    ],
)
def test_bad_training_settings_are_one_line_errors(kwargs):
    with pytest.raises(LTHError) as err:
        TrainConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_learning_rate_schedule():
    assert learning_rate(0.1, 0) == 0.1
    assert learning_rate(0.1, 79, milestones=(80, 120)) == pytest.approx(0.1)
    assert learning_rate(0.1, 80, milestones=(80, 120)) == pytest.approx(0.01)
    assert learning_rate(0.1, 120, milestones=(80, 120)) == pytest.approx(0.001)
    assert learning_rate(0.1, 0, warmup=10) == pytest.approx(0.01)
    assert learning_rate(0.1, 9, warmup=10) == pytest.approx(0.1)


class ResidualNet(torch.nn.Module):
    """A user model the stacked engine cannot run: BatchNorm and a residual connection."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 7 * 7, 10)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = h + torch.relu(self.conv2(h))
        return self.fc(F.max_pool2d(h, 4).flatten(1))


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_any_module_trains_one_at_a_time_like_plain_pytorch(cfg_name, float64):
    cfg = CONFIGS[cfg_name]
    data = synthetic_data()
    torch.manual_seed(0)
    model = ResidualNet()
    masks = random_masks(model, 3)
    trainer = Trainer(model, [TicketJob(model.state_dict(), masks, 9)], data, cfg)
    result = trainer.run()[0]
    expected_model = copy.deepcopy(model)
    expected = oracle_train(expected_model, masks, data, cfg, seed=9)
    for name, w in expected.items():
        assert result.final[name].dtype == w.dtype, name
        torch.testing.assert_close(result.final[name], w, **F64)
        if name in masks:
            assert torch.equal(
                result.final[name][~masks[name]], torch.zeros(int((~masks[name]).sum()))
            )
    assert "bn.running_mean" in result.final
    assert not torch.equal(result.final["bn.running_mean"], torch.zeros(4)), "BN statistics move"
    with pytest.raises(LTHError, match="one at a time"):
        Trainer(model, [TicketJob(model.state_dict(), masks, s) for s in (1, 2)], data, cfg)


def test_augmentation_is_applied_per_ticket_seeded_and_only_in_training():
    from lth.data import dataset_from_tensors

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (120,), generator=g)
    data = dataset_from_tensors("tiny", x, y, x[:40], y[:40], val_size=20, augmentation="crop_flip")
    model = make_model("lenet5", 0, shape=(3, 32, 32))
    masks = random_masks(model, 1)
    cfg = TrainConfig(iterations=8, batch_size=20, eval_every=4)
    plain = TrainConfig(iterations=8, batch_size=20, eval_every=4, augment=False)
    job = [TicketJob(model.state_dict(), masks, 3)]
    a = Trainer(model, job, data, cfg)
    batch, _ = a._batch()
    a.iteration = 0
    assert not torch.equal(batch[0], data.train_x[a.order[0, :20]]), "crop/flip applied"
    r1, r2 = Trainer(model, job, data, cfg).run()[0], Trainer(model, job, data, cfg).run()[0]
    r3 = Trainer(model, job, data, plain).run()[0]
    assert torch.equal(r1.final["fc1.weight"], r2.final["fc1.weight"]), "seeded"
    assert not torch.equal(r1.final["fc1.weight"], r3.final["fc1.weight"])
    # evaluation sees the data as it is: the same weights evaluate the same with or without
    t1, t3 = Trainer(model, job, data, cfg), Trainer(model, job, data, plain)
    assert t1.evaluate(data.test_x, data.test_y) == t3.evaluate(data.test_x, data.test_y)


def _skipping_tests(cfg: TrainConfig, every: int):
    """The same training with the test set at every evaluation and only every ``every``."""
    data = synthetic_data()
    template = make_model("lenet_300_100", 0)
    jobs = [
        TicketJob(make_model("lenet_300_100", i).state_dict(), random_masks(template, i), i)
        for i in range(2)
    ]
    full = Trainer(template, jobs, data, cfg).run()
    sparse_cfg = dataclasses.replace(cfg, test_every=every)
    return full, Trainer(template, jobs, data, sparse_cfg).run()


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(iterations=60, batch_size=20, eval_every=10, lr=3e-3),
        # diverges after a few evaluations: its last finite point becomes its final one
        TrainConfig(
            iterations=60,
            batch_size=20,
            eval_every=10,
            optimizer="sgd",
            lr=0.05,
            milestones=(25,),
            gamma=1e7,
        ),  # fmt: skip
    ],
)
def test_test_every_skips_test_points_but_not_the_summary(cfg):
    full, skipping = _skipping_tests(cfg, every=1000)
    for a, b in zip(full, skipping, strict=True):
        assert a.history.summary() == b.history.summary()
        assert a.history.val_loss == b.history.val_loss
        tested = [i for i, v in enumerate(b.history.test_acc) if v == v]
        if b.history.diverged_at is None:
            assert len(tested) < len(a.history.test_acc)  # points were skipped
        else:  # the deferred early stop and final point were evaluated from the kept weights
            assert {b.history.early_stop_index(), len(b.history.iteration) - 1} <= set(tested)
        for i in tested:  # and those evaluated equal evaluating there and then, bit for bit
            assert (a.history.test_loss[i], a.history.test_acc[i]) == (
                b.history.test_loss[i],
                b.history.test_acc[i],
            )
    if cfg.optimizer == "sgd":
        assert all(r.history.diverged_at for r in full)


def test_summary_csv_is_identical_with_fewer_test_points(tmp_path, data_dir, one_thread):
    """Real MNIST, a pruned level and its controls: summary.csv byte for byte."""
    from lth import ExperimentConfig, run_experiment

    base = ExperimentConfig(levels=1, iterations=60, eval_every=10, val_size=1000)
    for name, every in (("all", 0), ("few", 60)):
        config = dataclasses.replace(base, test_every=every)
        run_experiment(config, out=tmp_path / name, data_dir=data_dir, device="cpu", quiet=True)
    summary = (tmp_path / "all" / "summary.csv").read_bytes()
    assert summary == (tmp_path / "few" / "summary.csv").read_bytes()
    full = (tmp_path / "all" / "metrics.csv").read_text().splitlines()
    few = (tmp_path / "few" / "metrics.csv").read_text().splitlines()
    assert len(full) == len(few) and sum(a != b for a, b in zip(full, few)) > 0


def test_a_sequential_with_batchnorm_trains_and_keeps_its_statistics_honest():
    data = synthetic_data()
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )
    before = {n: b.clone() for n, b in model.named_buffers()}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if n.endswith("weight") and p.dim() > 1}  # fmt: skip
    cfg = TrainConfig(iterations=5, batch_size=20, eval_every=5)
    result = Trainer(model, [TicketJob(model.state_dict(), masks, 0)], data, cfg).run()[0]
    assert model.training  # sizing the evaluation chunks left the template as it was
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name  # the template's statistics untouched
    assert result.final["2.running_mean"].abs().sum() > 0  # the trained copy's moved
