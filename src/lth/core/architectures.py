"""The Lottery Ticket architectures: LeNet-300-100, LeNet-5, Conv-2/4/6 (flat ``nn.Sequential``
models built with shape tracking) and the CIFAR ResNet-20 and VGG-16 (general models).

Each builder takes ``(input_shape, num_classes)`` and raises :class:`InputTooSmall` when the
images are too small for it; :mod:`lth.core.models` registers them by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "BUILTIN",
    "CifarResNet",
    "CifarVGG",
    "InputTooSmall",
    "ResNetBlock",
    "VGG16_PLAN",
    "VGGConvModule",
    "conv2",
    "conv4",
    "conv6",
    "lenet5",
    "lenet_300_100",
    "resnet20",
    "vgg16",
]


class InputTooSmall(Exception):
    """Raised by a builder: a spatial dimension collapsed to < 1 while building a model."""


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
            raise InputTooSmall(f"the activation would be {height}x{width} after {layer}")
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


def lenet_300_100(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """LeNet-300-100 (Frankle & Carbin 2019): flatten, fc 300, relu, fc 100, relu, fc out."""
    b = _SequentialBuilder(input_shape).flatten()
    b.fc(300).relu().fc(100).relu().fc(num_classes)
    return b.build()


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


def conv2(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Conv-2: conv64, conv64, pool, fc 256, fc 256, fc out."""
    return _conv_net(input_shape, num_classes, (64,))


def conv4(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Conv-4: conv64 x2, pool, conv128 x2, pool, fc 256, fc 256, fc out."""
    return _conv_net(input_shape, num_classes, (64, 128))


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
                    raise InputTooSmall(
                        f"the activation would be {height}x{width} after layer {len(layers) - 1}"
                    )
            else:
                assert isinstance(spec, int)
                layers.append(VGGConvModule(channels, spec))
                channels = spec
        height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise InputTooSmall(
                f"the activation would be {height}x{width} after the final 2x2 average pool"
            )
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * height * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        out = F.avg_pool2d(out, 2)
        return self.fc(out.flatten(1))


def resnet20(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR-10 (He et al. 2016; open_lth ``cifar_resnet_20``): 16-32-64 channels,
    3 blocks per stage, BatchNorm, 1x1-conv projection shortcuts; 272,474 parameters."""
    return CifarResNet(input_shape[0], num_classes, ((16, 3), (32, 3), (64, 3)))


def vgg16(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """VGG-16 with BatchNorm for CIFAR-10 (open_lth ``cifar_vgg_16``); 14,728,266 parameters for
    32x32 images and 10 classes. Needs H and W of at least 32."""
    channels, height, width = input_shape
    return CifarVGG(channels, num_classes, VGG16_PLAN, (height, width))


#: The built-in models: ``name -> (builder, flat)``, in the order they are registered.
BUILTIN = {
    "lenet_300_100": (lenet_300_100, True),
    "lenet5": (lenet5, True),
    "conv2": (conv2, True),
    "conv4": (conv4, True),
    "conv6": (conv6, True),
    "resnet20": (resnet20, False),
    "vgg16": (vgg16, False),
}
#: Display names of the built-in models, for figure titles ("LeNet-300-100 on MNIST").
TITLES = {
    "lenet_300_100": "LeNet-300-100",
    "lenet5": "LeNet-5",
    "conv2": "Conv-2",
    "conv4": "Conv-4",
    "conv6": "Conv-6",
    "resnet20": "ResNet-20",
    "vgg16": "VGG-16",
}
