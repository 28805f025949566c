"""Model registry, the Lottery Ticket architectures, and seeded weight initialisation.

Two kinds of registry model:

* *Flat* models (the default for :func:`register_model`): an ``nn.Sequential`` built from an
  ``OrderedDict`` whose layers are only ``nn.Linear``, ``nn.Conv2d``, ``nn.ReLU``,
  ``nn.MaxPool2d`` and ``nn.Flatten`` (see :data:`ALLOWED_LAYERS`), so the batched engine can
  stack K copies of it. Layers are named ``conv1, conv2, ...``, ``pool1, ...``, ``relu1, ...``,
  ``flatten`` and ``fc1, fc2, ...`` (numbered in order of appearance). LeNet-300-100, LeNet-5
  and Conv-2/4/6 are flat; :func:`create_model` checks them with :func:`check_flat_sequential`.
* *General* models (registered with ``flat=False``): any ``nn.Module`` with at least one
  ``nn.Linear``. The CIFAR ResNet-20 (:class:`CifarResNet`) and VGG-16 (:class:`CifarVGG`) use
  BatchNorm and residual connections, so they are general; they are trained one at a time.
  Use :func:`is_flat_sequential` (or :func:`is_flat_model` by name) to choose the engine.

In both kinds the last ``nn.Linear`` is the output layer (:func:`output_layer`) and models take
(N, C, H, W).

Weights are set by :func:`initialize`, which draws only from the ``torch.Generator`` it is given,
so the same seed gives the same weights and the global RNG is never touched. :func:`create_model`
also leaves the global RNG state as it found it.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lth.errors import LTHError
from lth.usercode import NO_TRUST, CodeTrust, import_code

__all__ = [
    "ALLOWED_LAYERS",
    "INIT_SCHEMES",
    "MODELS",
    "CifarResNet",
    "CifarVGG",
    "ResNetBlock",
    "VGG16_PLAN",
    "VGGConvModule",
    "check_flat_sequential",
    "count_parameters",
    "create_model",
    "init_names",
    "initialize",
    "is_flat_model",
    "is_flat_sequential",
    "build_model",
    "call_factory",
    "model_names",
    "output_layer",
    "register_model",
]

ModelBuilder = Callable[[tuple[int, int, int], int], nn.Module]

#: Registered model builders: ``name -> builder(input_shape, num_classes) -> nn.Module``.
MODELS: dict[str, ModelBuilder] = {}

#: Names registered with ``flat=False`` (every other registered name is a flat model).
_GENERAL_MODELS: set[str] = set()

#: The only layer types a registry model may contain (exact types, no subclasses).
ALLOWED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.Flatten,
)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def register_model(name: str, *, flat: bool = True) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(input_shape, num_classes) -> nn.Module`` as ``name``.

    A registered name works wherever this process names a model: ``create_model(name)``,
    ``ExperimentConfig(model=name)``. The builder receives a validated ``(C, H, W)`` tuple of
    positive ints and a positive int; ``create_model`` checks what it returns.

    Args:
        name: The model's name; it must be new.
        flat: ``True`` (the default): the builder returns a flat ``nn.Sequential`` of
            ``lth.core.models.ALLOWED_LAYERS`` (Linear, Conv2d, ReLU, MaxPool2d, Flatten), which
            the batched engine can stack. ``False``: any ``nn.Module`` containing an
            ``nn.Linear`` (the last one is the output layer).

    Returns:
        The decorator; it registers the builder and returns it unchanged.

    Raises:
        LTHError: An empty name, or (when decorating) a name already registered.

    Examples:
        >>> import lth
        >>> from torch import nn
        >>> @lth.register_model("doc_tiny_mlp")
        ... def tiny_mlp(input_shape, num_classes):
        ...     c, h, w = input_shape
        ...     return nn.Sequential(
        ...         nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes)
        ...     )
        >>> model = lth.create_model("doc_tiny_mlp", (1, 8, 8), 3, generator=0)
        >>> [name for name, _ in model.named_parameters()]
        ['1.weight', '1.bias', '3.weight', '3.bias']
        >>> del MODELS["doc_tiny_mlp"]    # lth.core.models.MODELS: the registry
    """
    if not isinstance(name, str) or not name.strip():
        raise LTHError(f"model name must be a non-empty string, got {name!r}")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise LTHError(
                f"model name {name!r} is already registered; pick a different name "
                f"(taken: {', '.join(model_names())})"
            )
        MODELS[name] = builder
        if flat:
            _GENERAL_MODELS.discard(name)
        else:
            _GENERAL_MODELS.add(name)
        return builder

    return decorator


def model_names() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(MODELS)


def is_flat_model(name: str) -> bool:
    """Whether registry model ``name`` was registered as flat (the batched engine can stack it)."""
    if name not in MODELS:
        raise LTHError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    return name not in _GENERAL_MODELS


def create_model(
    name: str,
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    *,
    generator: torch.Generator | int | None = None,
    scheme: str = "xavier_normal",
) -> nn.Module:
    """Build registry model ``name`` for images shaped ``input_shape`` = (C, H, W).

    Flat models come back as a flat ``nn.Sequential`` (checked with
    ``lth.core.models.check_flat_sequential``); general ones (``resnet20``, ``vgg16``) as their own
    ``nn.Module`` subclass. Use ``lth.core.models.is_flat_sequential`` to tell them apart.

    Args:
        name: A registered model: ``lenet_300_100``, ``lenet5``, ``conv2``, ``conv4``,
            ``conv6``, ``resnet20``, ``vgg16``, or one added with ``register_model``.
        input_shape: ``(C, H, W)`` of one image, three positive ints; the default
            ``(1, 28, 28)`` is MNIST's.
        num_classes: Size of the output layer (default 10).
        generator: ``None`` (the default): the weights are PyTorch's defaults, drawn from a
            *forked* copy of the global RNG (the global state is left unchanged, so two such
            calls give the same weights): call ``initialize`` before training. A
            ``torch.Generator`` or an int seed: the model is initialised with ``scheme`` from
            it before it is returned.
        scheme: The initialisation scheme used with ``generator`` (see ``initialize``);
            ignored without one.

    Returns:
        The model: a flat ``nn.Sequential``, or a general model's own class.

    Raises:
        LTHError: An unknown name, an ``input_shape`` or ``num_classes`` that is not positive
            ints, images too small for the model (the message says the smallest side), a
            builder whose model does not fit its registration, or (with a ``generator``) an
            unknown ``scheme``.

    Examples:
        >>> import lth
        >>> model = lth.create_model("lenet_300_100", generator=0)
        >>> [name for name, _ in model.named_parameters()]
        ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'fc3.weight', 'fc3.bias']
        >>> type(lth.create_model("resnet20", (3, 32, 32), generator=0)).__name__
        'CifarResNet'
        >>> lth.create_model("lenet5", (1, 4, 4))
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: input_shape (1, 4, 4) is too small for model 'lenet5' ...
    """
    if name not in MODELS:
        raise LTHError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    shape = _validate_input_shape(input_shape)
    classes = _validate_positive_int(num_classes, "num_classes")
    try:
        with torch.random.fork_rng(devices=[]):
            model = MODELS[name](shape, classes)
    except _InputTooSmall as exc:
        minimum = _minimum_side(name, shape[0], classes)
        hint = f"use H and W of at least {minimum}" if minimum else "use larger images"
        raise LTHError(
            f"input_shape {shape} is too small for model {name!r} ({exc}); {hint}"
        ) from None
    if is_flat_model(name):
        check_flat_sequential(model, name=name)
    else:
        _check_general_model(model, name)
    if generator is not None:
        initialize(model, scheme, generator)
    return model


def check_flat_sequential(model: nn.Module, name: str = "model") -> None:
    """Raise :class:`LTHError` unless ``model`` is a flat ``nn.Sequential`` of allowed layers.

    Flat means: an ``nn.Sequential`` whose children are exactly of the types in
    :data:`ALLOWED_LAYERS` (no nesting, no subclasses) and which contains at least one
    ``nn.Linear`` as its last layer (the output layer); convolutions pad with zeros. This is
    the one test of whether the stacked engine (:mod:`lth.core.engine`) can run a model.
    """
    allowed = ", ".join(t.__name__ for t in ALLOWED_LAYERS)
    if type(model) is not nn.Sequential:
        raise LTHError(
            f"{name} must be a flat nn.Sequential of ({allowed}), got {type(model).__name__}; "
            "build it as nn.Sequential(OrderedDict(...))"
        )
    for child_name, child in model.named_children():
        if type(child) not in ALLOWED_LAYERS:
            raise LTHError(
                f"{name} layer {child_name!r} is a {type(child).__name__}, which the batched "
                f"engine cannot stack; use only ({allowed}) directly inside the nn.Sequential"
            )
    children = list(model.children())
    if not children or type(children[-1]) is not nn.Linear:
        raise LTHError(f"{name} must end with an nn.Linear layer, the output layer")
    for child_name, child in model.named_children():
        if isinstance(child, nn.Conv2d) and child.padding_mode != "zeros":
            raise LTHError(
                f"{name} layer {child_name!r} pads with {child.padding_mode!r}; the batched "
                "engine stacks only zero-padded convolutions"
            )


def is_flat_sequential(model: nn.Module) -> bool:
    """True if ``model`` passes :func:`check_flat_sequential` (the batched engine can stack it)."""
    try:
        check_flat_sequential(model)
    except LTHError:
        return False
    return True


def _check_general_model(model: object, name: str) -> None:
    """A non-flat registry model must be an ``nn.Module`` with an ``nn.Linear`` output layer."""
    if not isinstance(model, nn.Module):
        raise LTHError(
            f"model builder {name!r} returned a {type(model).__name__}; it must return an nn.Module"
        )
    if not any(isinstance(module, nn.Linear) for module in model.modules()):
        raise LTHError(f"{name} has no nn.Linear layer; the last nn.Linear is the output layer")


def output_layer(model: nn.Module) -> str:
    """Parameter name of the output layer's weight (the last ``nn.Linear``), e.g. "fc3.weight"."""
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise LTHError(
            f"{type(model).__name__} has no nn.Linear layer, so it has no output layer; "
            "end the model with an nn.Linear"
        )
    return f"{last}.weight" if last else "weight"


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Building flat Sequentials with shape tracking
# --------------------------------------------------------------------------------------------


class _InputTooSmall(Exception):
    """Internal: a spatial dimension collapsed to < 1 while building a model."""


class _SequentialBuilder:
    """Appends named layers to an OrderedDict while tracking the activation shape."""

    def __init__(self, input_shape: tuple[int, int, int]):
        self.channels, self.height, self.width = input_shape
        self.features: int | None = None  # set once flattened
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()
        self._counts: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return f"{prefix}{self._counts[prefix]}"

    def _set_spatial(self, height: int, width: int, layer: str) -> None:
        if height < 1 or width < 1:
            raise _InputTooSmall(f"the activation would be {height}x{width} after {layer}")
        self.height, self.width = height, width

    def conv(self, out_channels: int, kernel_size: int, padding: int = 0) -> _SequentialBuilder:
        name = self._name("conv")
        self.layers[name] = nn.Conv2d(self.channels, out_channels, kernel_size, padding=padding)
        self.channels = out_channels
        self._set_spatial(
            self.height + 2 * padding - kernel_size + 1,
            self.width + 2 * padding - kernel_size + 1,
            name,
        )
        return self

    def pool(self, kernel_size: int = 2) -> _SequentialBuilder:
        name = self._name("pool")
        self.layers[name] = nn.MaxPool2d(kernel_size)
        self._set_spatial(self.height // kernel_size, self.width // kernel_size, name)
        return self

    def relu(self) -> _SequentialBuilder:
        self.layers[self._name("relu")] = nn.ReLU()
        return self

    def flatten(self) -> _SequentialBuilder:
        self.layers["flatten"] = nn.Flatten()
        self.features = self.channels * self.height * self.width
        return self

    def fc(self, out_features: int) -> _SequentialBuilder:
        if self.features is None:
            self.flatten()
        assert self.features is not None
        self.layers[self._name("fc")] = nn.Linear(self.features, out_features)
        self.features = out_features
        return self

    def build(self) -> nn.Sequential:
        return nn.Sequential(self.layers)


def _validate_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise LTHError(f"{what} must be a positive integer, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise LTHError(f"{what} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise LTHError(f"{what} must be a positive integer, got {value!r}")
    return number


def _validate_input_shape(input_shape: object) -> tuple[int, int, int]:
    message = (
        f"input_shape must be (C, H, W) with three positive integers, e.g. (1, 28, 28) for MNIST "
        f"or (3, 32, 32) for CIFAR-10; got {input_shape!r}"
    )
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise LTHError(message)
    if len(input_shape) != 3:
        raise LTHError(message)
    dims = []
    for dim in input_shape:
        if isinstance(dim, bool):
            raise LTHError(message)
        try:
            dims.append(operator.index(dim))
        except TypeError:
            raise LTHError(message) from None
    if any(d < 1 for d in dims):
        raise LTHError(message)
    return (dims[0], dims[1], dims[2])


def _minimum_side(name: str, channels: int, num_classes: int) -> int | None:
    """Smallest square image side that model ``name`` accepts (None if none up to 1024)."""
    for side in range(1, 1025):
        try:
            with torch.device("meta"):
                MODELS[name]((channels, side, side), num_classes)
        except _InputTooSmall:
            continue
        return side
    return None


# --------------------------------------------------------------------------------------------
# The architectures
# --------------------------------------------------------------------------------------------


@register_model("lenet_300_100")
def lenet_300_100(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """LeNet-300-100 (Frankle & Carbin 2019): flatten, fc 300, relu, fc 100, relu, fc out."""
    b = _SequentialBuilder(input_shape).flatten()
    b.fc(300).relu().fc(100).relu().fc(num_classes)
    return b.build()


@register_model("lenet5")
def lenet5(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """LeNet-5: conv6 5x5 pad 2, pool, conv16 5x5, pool, fc 120, fc 84, fc out (ReLU, max-pool)."""
    b = _SequentialBuilder(input_shape)
    b.conv(6, 5, padding=2).relu().pool(2)
    b.conv(16, 5).relu().pool(2)
    b.flatten().fc(120).relu().fc(84).relu().fc(num_classes)
    return b.build()


def _conv_net(
    input_shape: tuple[int, int, int], num_classes: int, blocks: Sequence[int]
) -> nn.Sequential:
    """Conv-2/4/6 of Frankle & Carbin 2019: per block (conv3x3, relu) x2 then max-pool 2x2,
    then fc 256, relu, fc 256, relu, fc out."""
    b = _SequentialBuilder(input_shape)
    for channels in blocks:
        b.conv(channels, 3, padding=1).relu().conv(channels, 3, padding=1).relu().pool(2)
    b.flatten().fc(256).relu().fc(256).relu().fc(num_classes)
    return b.build()


@register_model("conv2")
def conv2(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Conv-2: conv64, conv64, pool, fc 256, fc 256, fc out."""
    return _conv_net(input_shape, num_classes, (64,))


@register_model("conv4")
def conv4(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Conv-4: conv64 x2, pool, conv128 x2, pool, fc 256, fc 256, fc out."""
    return _conv_net(input_shape, num_classes, (64, 128))


@register_model("conv6")
def conv6(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Conv-6: conv64 x2, pool, conv128 x2, pool, conv256 x2, pool, fc 256, fc 256, fc out."""
    return _conv_net(input_shape, num_classes, (64, 128, 256))


# --------------------------------------------------------------------------------------------
# CIFAR ResNet-20 and VGG-16 (general models: BatchNorm, residual connections)
# --------------------------------------------------------------------------------------------


class ResNetBlock(nn.Module):
    """Basic residual block: conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU.

    The shortcut is the identity (an empty ``nn.Sequential``) when the shape is unchanged, and
    otherwise a 1x1 convolution with the block's stride followed by BatchNorm (a projection, as
    in open_lth). Convolutions have no bias.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if downsample or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 as in open_lth's ``cifar_resnet_N``.

    ``conv`` (3x3, no bias) + ``bn`` + ReLU, then ``blocks``: for each ``(channels, count)`` of
    ``plan`` that many :class:`ResNetBlock` (the first block of every stage after the first
    halves H and W), then global average pooling and ``fc``. Parameter names match open_lth:
    ``conv.weight``, ``bn.weight``, ``blocks.0.conv1.weight``, ``blocks.3.shortcut.0.weight``,
    ``fc.weight``. Any H and W work (stride-2 convolutions round up).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        plan: Sequence[tuple[int, int]] = ((16, 3), (32, 3), (64, 3)),
    ):
        super().__init__()
        channels = plan[0][0]
        self.conv = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        blocks = []
        for stage, (filters, count) in enumerate(plan):
            for index in range(count):
                blocks.append(ResNetBlock(channels, filters, downsample=stage > 0 and index == 0))
                channels = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = out.mean(dim=(2, 3))  # global average pool (open_lth: avg_pool2d over the map)
        return self.fc(out)


class VGGConvModule(nn.Module):
    """One VGG layer: ``conv`` 3x3 (padding 1, with bias, as in open_lth), ``bn``, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


#: open_lth's ``cifar_vgg_16`` plan: output channels of each conv module, "M" = max-pool 2x2.
VGG16_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


class CifarVGG(nn.Module):
    """A CIFAR VGG with BatchNorm as in open_lth's ``cifar_vgg_N``.

    ``layers``: a :class:`VGGConvModule` per int in ``plan`` and ``nn.MaxPool2d(2)`` per "M";
    then average pooling 2x2, flatten and a single ``fc``. For 32x32 images the features are
    1x1 at the end, so ``fc`` is 512 -> classes; larger images give ``512 * (H//32) * (W//32)``
    inputs. Parameter names: ``layers.0.conv.weight``, ``layers.0.bn.weight``, ``fc.weight``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        plan: Sequence[int | str] = VGG16_PLAN,
        input_size: tuple[int, int] = (32, 32),
    ):
        super().__init__()
        height, width = input_size
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, width = height // 2, width // 2
                if height < 1 or width < 1:
                    raise _InputTooSmall(
                        f"the activation would be {height}x{width} after layer {len(layers) - 1}"
                    )
            else:
                assert isinstance(spec, int)
                layers.append(VGGConvModule(channels, spec))
                channels = spec
        height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise _InputTooSmall(
                f"the activation would be {height}x{width} after the final 2x2 average pool"
            )
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * height * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        out = F.avg_pool2d(out, 2)
        return self.fc(out.flatten(1))


@register_model("resnet20", flat=False)
def resnet20(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR-10 (He et al. 2016; open_lth ``cifar_resnet_20``): 16-32-64 channels,
    3 blocks per stage, BatchNorm, 1x1-conv projection shortcuts; 272,474 parameters."""
    return CifarResNet(input_shape[0], num_classes, ((16, 3), (32, 3), (64, 3)))


@register_model("vgg16", flat=False)
def vgg16(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """VGG-16 with BatchNorm for CIFAR-10 (open_lth ``cifar_vgg_16``); 14,728,266 parameters for
    32x32 images and 10 classes. Needs H and W of at least 32."""
    channels, height, width = input_shape
    return CifarVGG(channels, num_classes, VGG16_PLAN, (height, width))


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------

_RELU_GAIN = math.sqrt(2.0)

InitFn = Callable[[torch.Tensor, torch.Generator], None]


def _xavier_normal(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.xavier_normal_(t, generator=g)


def _xavier_uniform(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.xavier_uniform_(t, generator=g)


def _kaiming_normal(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu", generator=g)


def _kaiming_uniform(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.kaiming_uniform_(t, mode="fan_in", nonlinearity="relu", generator=g)


def _pytorch_default(t: torch.Tensor, g: torch.Generator) -> None:
    # What nn.Linear / nn.Conv2d reset_parameters do: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g)


#: Weight initialisers for Linear / Conv weights (and recurrent input weights), by scheme name.
#: Biases are zero for every scheme except ``pytorch_default``, which draws them like PyTorch.
INIT_SCHEMES: dict[str, InitFn] = {
    "xavier_normal": _xavier_normal,
    "xavier_uniform": _xavier_uniform,
    "kaiming_normal": _kaiming_normal,
    "kaiming_uniform": _kaiming_uniform,
    "pytorch_default": _pytorch_default,
}


def init_names() -> list[str]:
    """Names of the initialisation schemes, sorted."""
    return sorted(INIT_SCHEMES)


def _as_generator(generator: object) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise LTHError(
        f"initialize() needs a torch.Generator or an int seed, got {type(generator).__name__}; "
        "pass e.g. generator=torch.Generator().manual_seed(0)"
    )


def _fill(param: torch.Tensor, g: torch.Generator, fn: Callable[[torch.Tensor], object]) -> None:
    """Draw ``param``'s values with ``fn`` into a scratch tensor on the generator's device, then
    copy them in. This lets a CPU generator initialise a GPU model and makes the weights
    independent of the model's device and dtype."""
    dtype = param.dtype if param.dtype in (torch.float32, torch.float64) else torch.float32
    scratch = torch.empty(param.shape, dtype=dtype, device=g.device)
    fn(scratch)
    with torch.no_grad():
        param.copy_(scratch)


def _zero(param: torch.Tensor | None) -> None:
    if param is not None:
        with torch.no_grad():
            param.zero_()


def _init_fan_layer(module: nn.Module, scheme: str, g: torch.Generator) -> None:
    """Linear / Conv*d / ConvTranspose*d: weight by scheme, bias zero (or PyTorch-like)."""
    weight = module.weight
    _fill(weight, g, lambda t: INIT_SCHEMES[scheme](t, g))
    bias = getattr(module, "bias", None)
    if bias is None:
        return
    if scheme == "pytorch_default":
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        _fill(bias, g, lambda t: nn.init.uniform_(t, -bound, bound, generator=g))
    else:
        _zero(bias)


def _init_recurrent(module: nn.Module, scheme: str, g: torch.Generator) -> None:
    """RNN / LSTM / GRU (and their Cell versions).

    ``pytorch_default`` reproduces PyTorch: every parameter U(-1/sqrt(H), 1/sqrt(H)). Otherwise,
    per gate block: ``weight_ih`` by scheme, ``weight_hh`` orthogonal, ``weight_hr`` (LSTM
    projection) by scheme, biases zero.
    """
    hidden = module.hidden_size
    if scheme == "pytorch_default":
        stdv = 1.0 / math.sqrt(hidden) if hidden > 0 else 0.0
        for param in module.parameters(recurse=False):
            _fill(param, g, lambda t: nn.init.uniform_(t, -stdv, stdv, generator=g))
        return
    for pname, param in module.named_parameters(recurse=False):
        if pname.startswith("bias"):
            _zero(param)
        elif pname.startswith(("weight_ih", "weight_hh")):
            fn: Callable[[torch.Tensor], object]
            if pname.startswith("weight_ih"):
                fn = lambda t: INIT_SCHEMES[scheme](t, g)  # noqa: E731
            else:
                fn = lambda t: nn.init.orthogonal_(t, generator=g)  # noqa: E731
            gates = param.shape[0] // hidden if hidden > 0 else 1
            for k in range(gates):
                _fill(param[k * hidden : (k + 1) * hidden], g, fn)
        else:  # weight_hr (LSTM projection) or anything else 2-D
            _fill(param, g, lambda t: INIT_SCHEMES[scheme](t, g))


def _init_norm(module: nn.Module) -> None:
    """BatchNorm / GroupNorm / LayerNorm / InstanceNorm: weight 1, bias 0, fresh running stats."""
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.fill_(1.0)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    if hasattr(module, "reset_running_stats") and getattr(module, "track_running_stats", False):
        module.reset_running_stats()


def _init_embedding(module: nn.Embedding, g: torch.Generator) -> None:
    """PyTorch's own Embedding init, N(0, 1), with the padding row zeroed."""
    _fill(module.weight, g, lambda t: nn.init.normal_(t, generator=g))
    if module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


def _init_other(module: nn.Module, g: torch.Generator) -> None:
    """A module type we do not know that owns parameters: run its own ``reset_parameters`` with
    the CPU global RNG temporarily seeded from ``g`` (state restored afterwards)."""
    own = list(module.parameters(recurse=False))
    reset = getattr(module, "reset_parameters", None)
    kind = type(module).__name__
    if not callable(reset):
        raise LTHError(
            f"initialize() does not know how to initialise {kind} (it has parameters but no "
            "reset_parameters method); add a reset_parameters() method to it or initialise it "
            "yourself"
        )
    if any(p.device.type != "cpu" for p in own):
        raise LTHError(
            f"initialize() can only initialise the unknown module type {kind} on the CPU; "
            "call initialize() before moving the model to the accelerator"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        with torch.no_grad():
            reset()


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


def initialize(
    model: nn.Module,
    scheme: str = "xavier_normal",
    generator: torch.Generator | int | None = None,
) -> None:
    """Initialise ``model`` in place with ``scheme``, drawing only from ``generator``.

    Walks ``model.modules()``: Linear / Conv weights by scheme (biases zero, except
    ``pytorch_default`` which reproduces PyTorch's own ``reset_parameters`` draws bit for bit);
    norm layers weight 1, bias 0; RNN / LSTM / GRU (+ Cells): ``weight_ih`` by scheme,
    ``weight_hh`` orthogonal per gate block, biases zero; Embedding N(0, 1). Any other module that
    owns parameters is reset with its own ``reset_parameters`` under a generator-derived seed.
    The global RNG is not used, so the same seed gives the same weights.

    Args:
        model: The model to initialise, changed in place (any ``nn.Module``, on any device).
        scheme: ``"xavier_normal"`` (the default), ``"xavier_uniform"``,
            ``"kaiming_normal"``, ``"kaiming_uniform"`` or ``"pytorch_default"``.
        generator: A ``torch.Generator`` or an int seed; required (``None`` is refused, so
            that runs are reproducible).

    Returns:
        None.

    Raises:
        LTHError: An unknown scheme, or a generator that is missing or neither a
            ``torch.Generator`` nor an int.

    Examples:
        >>> import torch, lth
        >>> from torch import nn
        >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> lth.initialize(a, "kaiming_normal", generator=0)
        >>> lth.initialize(b, "kaiming_normal", torch.Generator().manual_seed(0))
        >>> torch.equal(a.weight, b.weight), a.bias.abs().sum().item()
        (True, 0.0)
    """
    if scheme not in INIT_SCHEMES:
        raise LTHError(f"unknown init scheme {scheme!r}; valid schemes: {', '.join(init_names())}")
    if generator is None:
        raise LTHError(
            "initialize() needs an explicit generator so runs are reproducible; "
            "pass generator=torch.Generator().manual_seed(seed) or an int seed"
        )
    g = _as_generator(generator)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            _init_fan_layer(module, scheme, g)
        elif isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            _init_recurrent(module, scheme, g)
        elif isinstance(module, _NORM_TYPES):
            _init_norm(module)
        elif isinstance(module, nn.Embedding):
            _init_embedding(module, g)
        elif any(True for _ in module.parameters(recurse=False)):
            _init_other(module, g)


def call_factory(
    factory: Callable[..., nn.Module], input_shape, num_classes: int, name: str
) -> nn.Module:
    """Build a model with a user's factory: ``factory(input_shape, num_classes)`` or ``factory()``.

    Whatever the factory raises (even ``SystemExit``) becomes a one-line :class:`LTHError`, and
    so does a result that is not an ``nn.Module``.
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    try:
        model = factory(input_shape, num_classes) if len(params) >= 2 else factory()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - user code: SystemExit, os.abort-like exits
        raise LTHError(f"model factory {name} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise LTHError(f"model factory {name} returned {type(model).__name__}, not an nn.Module")
    return model


def build_model(
    spec: str, input_shape: Sequence[int], num_classes: int, trust: CodeTrust = NO_TRUST
) -> nn.Module:
    """A registry model by name, or a user's factory named ``package.module:function``,
    imported only if ``trust`` allows it (:func:`lth.usercode.import_code`).

    >>> build_model("lenet_300_100", (1, 28, 28), 10)[-1]
    Linear(in_features=100, out_features=10, bias=True)
    """
    if ":" not in spec:
        return create_model(spec, tuple(input_shape), num_classes)
    factory = import_code(spec, "model", trust)
    return call_factory(factory, tuple(input_shape), num_classes, spec)
