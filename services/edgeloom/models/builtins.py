"""The built-in offline models every kind may name (``model.builtin``), each a
``from_pretrained`` folder on this machine: nothing comes from a hub."""

from __future__ import annotations

from pathlib import Path

from edgeloom.api.artifacts import BuiltinModel
from edgeloom.models.sentence_encoder import minilm_path
from edgeloom.models.smollm2 import build_smollm2
from edgeloom.models.tiny_llama import build_tiny_llama


def builtin_model_folder(builtin: BuiltinModel) -> Path:
    """The folder of a built-in model (tiny-llama is trained, smollm2-135m converted, and
    either cached on first use)."""
    if builtin == BuiltinModel.TINY_LLAMA:
        return build_tiny_llama("standard")
    if builtin == BuiltinModel.SMOLLM2_135M:
        return build_smollm2()
    return minilm_path()
