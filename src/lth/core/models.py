"""The model registry and builder: register, look up, build and check models by name.

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

The architectures live in :mod:`lth.core.architectures`, the initialisation schemes in
:mod:`lth.core.init` (:func:`~lth.core.init.initialize`). :func:`create_model` leaves the
global RNG state as it found it.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lth.core.architectures import BUILTIN, TITLES, InputTooSmall
from lth.core.init import initialize
from lth.errors import LTHError
from lth.registry import Registry
from lth.usercode import NO_TRUST, CodeTrust, import_code

__all__ = [
    "ALLOWED_LAYERS",
    "MODELS",
    "check_flat_sequential",
    "count_parameters",
    "create_model",
    "is_flat_model",
    "is_flat_sequential",
    "build_model",
    "call_factory",
    "model_maker",
    "model_names",
    "output_layer",
    "register_model",
]

ModelBuilder = Callable[[tuple[int, int, int], int], nn.Module]

#: Registered model builders: ``name -> builder(input_shape, num_classes) -> nn.Module``.
MODELS: Registry[ModelBuilder] = Registry(
    "model", sort=True, unknown="unknown {kind} {name!r}; valid models: {names}"
)

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


def register_model(
    name: str, *, flat: bool = True, description: str = ""
) -> Callable[[ModelBuilder], ModelBuilder]:
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
        description: A one-line description (default: the builder's docstring's first line).

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
        doc = (builder.__doc__ or "").strip().splitlines()
        MODELS.add(name, builder, description or (doc[0] if doc else ""))
        if flat:
            _GENERAL_MODELS.discard(name)
        else:
            _GENERAL_MODELS.add(name)
        return builder

    return decorator


def model_names() -> list[str]:
    """Names of all registered models, sorted."""
    return MODELS.names()


def is_flat_model(name: str) -> bool:
    """Whether registry model ``name`` was registered as flat (the batched engine can stack it)."""
    MODELS.lookup(name)
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
    builder = MODELS.lookup(name)
    shape = _validate_input_shape(input_shape)
    classes = _validate_positive_int(num_classes, "num_classes")
    try:
        with torch.random.fork_rng(devices=[]):
            model = builder(shape, classes)
    except InputTooSmall as exc:
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
# Checking create_model's arguments
# --------------------------------------------------------------------------------------------


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
        except InputTooSmall:
            continue
        return side
    return None


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


def model_maker(
    model: str | nn.Module | Callable[..., nn.Module],
    input_shape: Sequence[int],
    num_classes: int,
    trust: CodeTrust = NO_TRUST,
) -> Callable[[], nn.Module] | None:
    """How a study builds its model again, as a function of no arguments: a registry name, a
    ``package.module:function`` (imported once, now, only if ``trust`` allows it) or a factory;
    ``None`` for an ``nn.Module`` object, which cannot be built again.

    >>> make = model_maker("lenet_300_100", (1, 28, 28), 10)
    >>> make()[-1], model_maker(make(), (1, 28, 28), 10)
    (Linear(in_features=100, out_features=10, bias=True), None)
    """
    shape = tuple(input_shape)
    if isinstance(model, nn.Module):
        return None
    if isinstance(model, str) and ":" not in model:
        MODELS.lookup(model)
        return lambda: create_model(model, shape, num_classes)
    if isinstance(model, str):
        factory, name = import_code(model, "model", trust), model
    else:
        factory, name = model, repr(model)
    return lambda: call_factory(factory, shape, num_classes, name)


for _name, (_builder, _flat) in BUILTIN.items():
    register_model(_name, flat=_flat)(_builder)
MODELS.titles.update(TITLES)  # display names for figure titles
