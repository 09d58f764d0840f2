"""Small CNNs built as a sequence of blocks, split between a worker (bottom) and a server (top).

Every model is an ``nn.Sequential`` of blocks; a split point ``k`` puts the first ``k`` blocks
on the worker and the rest on the server. Feature shapes below are per sample, for the default
input shapes.

``cnn1d`` (MNIST-1D, input ``(1, 40)``), 5 blocks:

====  ==========================================  ============
block layers                                      output
====  ==========================================  ============
0     Conv1d(1, 32, 5, pad 2), ReLU, MaxPool(2)   (32, 20)
1     Conv1d(32, 64, 3, pad 1), ReLU, MaxPool(2)  (64, 10)
2     Conv1d(64, 64, 3, pad 1), ReLU, MaxPool(2)  (64, 5)
3     Flatten, Linear(320, 128), ReLU             (128,)
4     Linear(128, classes)                        (classes,)
====  ==========================================  ============

Default split 2: the worker runs two conv blocks and sends ``(64, 10)`` features (640 floats).

``digits-cnn`` (scikit-learn digits, input ``(1, 8, 8)``), 4 blocks:

====  ==========================================  ============
block layers                                      output
====  ==========================================  ============
0     Conv2d(1, 16, 3, pad 1), ReLU               (16, 8, 8)
1     Conv2d(16, 32, 3, pad 1), ReLU, MaxPool(2)  (32, 4, 4)
2     Flatten, Linear(512, 64), ReLU              (64,)
3     Linear(64, classes)                         (classes,)
====  ==========================================  ============

Default split 2: the worker runs both conv blocks and sends ``(32, 4, 4)`` features (512 floats).

``cifar-alexnet`` (CIFAR-10, input ``(3, 32, 32)``), 8 blocks: the five conv layers and three
fully connected layers of the CIFAR AlexNet that MergeSFL splits into ``AlexNet_DF1`` (all conv
layers, on the worker) and ``AlexNet_DF2`` (the FC layers, on the server):

====  ======================================================  ============
block layers                                                  output
====  ======================================================  ============
0     Conv2d(3, 64, 3, stride 2, pad 1), ReLU, MaxPool(2)     (64, 8, 8)
1     Conv2d(64, 192, 3, pad 1), ReLU, MaxPool(2)             (192, 4, 4)
2     Conv2d(192, 384, 3, pad 1), ReLU                        (384, 4, 4)
3     Conv2d(384, 256, 3, pad 1), ReLU                        (256, 4, 4)
4     Conv2d(256, 256, 3, pad 1), ReLU, MaxPool(2)            (256, 2, 2)
5     Flatten, Dropout, Linear(1024, 1024), ReLU              (1024,)
6     Dropout, Linear(1024, 1024), ReLU                       (1024,)
7     Linear(1024, classes)                                   (classes,)
====  ======================================================  ============

Default split 5 (as MergeSFL): the worker sends ``(256, 2, 2)`` features (1024 floats). The conv
widths are those of the widely used CIFAR AlexNet; the FC width is 1024 rather than 4096 so the
server's top model stays quick on a CPU (the official ``models.py`` could not be checked).

Initialisation uses PyTorch's default initialisers and therefore the global torch RNG: call
``torch.manual_seed(seed)`` before :func:`build_model` for a reproducible model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from edgeloom.api.kinds.splittraining import ARCHITECTURES as FACTS
from edgeloom.api.kinds.splittraining import Architecture

ARCHITECTURES: tuple[str, ...] = tuple(arch.value for arch in FACTS)

DEFAULT_SPLIT_POINT: dict[str, int] = {
    arch.value: facts.default_split_point for arch, facts in FACTS.items()
}
"""Per architecture, from the API's table (``model.splitPoint`` defaults to it)."""

ALEXNET_HIDDEN = 1024


def output_shape(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for per-sample input shape ``in_shape``.

    Parameters
    ----------
    module : nn.Module
        Any module taking a batch; it is run once on a batch of one zero sample.
    in_shape : tuple of int
        Input shape without the batch dimension.

    Returns
    -------
    tuple of int
        Output shape without the batch dimension.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            param = next(module.parameters(), None)
            device = param.device if param is not None else None
            out = module(torch.zeros((1, *in_shape), device=device))
    finally:
        module.train(was_training)
    return tuple(out.shape[1:])


def _cnn1d(num_classes: int, in_shape: tuple[int, ...]) -> list[nn.Module]:
    channels = in_shape[0]
    convs = [
        nn.Sequential(nn.Conv1d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2)),
        nn.Sequential(nn.Conv1d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2)),
        nn.Sequential(nn.Conv1d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2)),
    ]
    flat = _flat_size(convs, in_shape)
    return [
        *convs,
        nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU()),
        nn.Linear(128, num_classes),
    ]


def _digits_cnn(num_classes: int, in_shape: tuple[int, ...]) -> list[nn.Module]:
    channels = in_shape[0]
    convs = [
        nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
    ]
    flat = _flat_size(convs, in_shape)
    return [
        *convs,
        nn.Sequential(nn.Flatten(), nn.Linear(flat, 64), nn.ReLU()),
        nn.Linear(64, num_classes),
    ]


def _cifar_alexnet(num_classes: int, in_shape: tuple[int, ...]) -> list[nn.Module]:
    channels = in_shape[0]
    convs = [
        nn.Sequential(nn.Conv2d(channels, 64, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(192, 384, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(384, 256, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
    ]
    flat = _flat_size(convs, in_shape)
    return [
        *convs,
        nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(flat, ALEXNET_HIDDEN), nn.ReLU()),
        nn.Sequential(nn.Dropout(), nn.Linear(ALEXNET_HIDDEN, ALEXNET_HIDDEN), nn.ReLU()),
        nn.Linear(ALEXNET_HIDDEN, num_classes),
    ]


def _flat_size(blocks: Sequence[nn.Module], in_shape: tuple[int, ...]) -> int:
    return int(torch.Size(output_shape(nn.Sequential(*blocks), in_shape)).numel())


_BUILDERS: dict[str, Callable[[int, tuple[int, ...]], list[nn.Module]]] = {
    Architecture.CNN1D: _cnn1d,
    Architecture.DIGITS_CNN: _digits_cnn,
    Architecture.CIFAR_ALEXNET: _cifar_alexnet,
}

_INPUT_RANK: dict[str, int] = {
    Architecture.CNN1D: 2,
    Architecture.DIGITS_CNN: 3,
    Architecture.CIFAR_ALEXNET: 3,
}


def build_model(architecture: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Sequential:
    """Build a block-structured CNN.

    Parameters
    ----------
    architecture : str
        ``"cnn1d"``, ``"digits-cnn"`` or ``"cifar-alexnet"`` (see the module docstring).
    num_classes : int
        Number of output logits.
    in_shape : tuple of int
        Per-sample input shape, channels first: ``(C, L)`` for ``cnn1d``, ``(C, H, W)``
        otherwise. Spatial sizes must survive the pooling (``L >= 8``; ``H, W >= 2`` for
        ``digits-cnn``; ``H, W >= 16`` for ``cifar-alexnet``).

    Returns
    -------
    nn.Sequential
        One child per block; split it with :func:`split_model`.

    Raises
    ------
    ValueError
        On an unknown architecture, ``num_classes < 2`` or an input shape of the wrong rank.
    """
    if architecture not in _BUILDERS:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    in_shape = tuple(int(d) for d in in_shape)
    if len(in_shape) != _INPUT_RANK[architecture] or min(in_shape) < 1:
        raise ValueError(
            f"{architecture} expects a per-sample input shape of rank "
            f"{_INPUT_RANK[architecture]} with positive sizes, got {in_shape}"
        )
    return nn.Sequential(*_BUILDERS[architecture](num_classes, in_shape))


def split_model(model: nn.Sequential, split_point: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a block-structured model into the worker's bottom and the server's top.

    Parameters
    ----------
    model : nn.Sequential
        A model from :func:`build_model` (any ``nn.Sequential`` works: each child is a block).
    split_point : int
        Number of leading blocks in the bottom model, ``1 <= split_point <= len(model) - 1``.

    Returns
    -------
    bottom, top : nn.Sequential
        ``top(bottom(x)) == model(x)``. Both share their modules (and so their parameters)
        with ``model``; ``copy.deepcopy`` them for independent copies.

    Raises
    ------
    ValueError
        If ``split_point`` leaves either part empty.
    """
    blocks = list(model.children())
    if not 1 <= split_point <= len(blocks) - 1:
        raise ValueError(
            f"split_point must be between 1 and {len(blocks) - 1} for a model of "
            f"{len(blocks)} blocks, got {split_point}"
        )
    return nn.Sequential(*blocks[:split_point]), nn.Sequential(*blocks[split_point:])
