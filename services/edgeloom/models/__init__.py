"""Model builders: small CNNs with a documented bottom (worker) / top (server) split."""

from edgeloom.models.split_cnn import (
    ARCHITECTURES,
    DEFAULT_SPLIT_POINT,
    build_model,
    output_shape,
    split_model,
)

__all__ = ["ARCHITECTURES", "DEFAULT_SPLIT_POINT", "build_model", "output_shape", "split_model"]
