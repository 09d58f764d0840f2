"""The (inputs, labels) pair every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch


@dataclass(frozen=True)
class TensorPair:
    """Inputs and integer labels of one split of a dataset.

    Attributes
    ----------
    x : torch.Tensor
        float32 inputs, shape ``(N, *sample_shape)``, channels first.
    y : torch.Tensor
        int64 class labels in ``[0, num_classes)``, shape ``(N,)``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.y.dtype != torch.int64:
            raise ValueError(
                f"expected float32 x and int64 y, got {self.x.dtype} and {self.y.dtype}"
            )
        if self.y.ndim != 1 or self.x.shape[:1] != self.y.shape:
            raise ValueError(
                f"x and y must hold the same number of samples, got {tuple(self.x.shape)} "
                f"and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: npt.ArrayLike) -> TensorPair:
        """Samples at ``indices`` (for example one worker's partition), in that order."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorPair(self.x[index], self.y[index])
