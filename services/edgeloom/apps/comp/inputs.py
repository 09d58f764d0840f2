"""What a PruneJob works on: the model, its calibration data and its quality measure.

Shared by the ``pruner`` role and ``edgeloom bench prunejob`` so both prune and measure in
exactly the same way. Causal LMs are measured by held-out perplexity; sentence encoders by the
fidelity of their embeddings to the unpruned model and by retrieval accuracy on held-out
docstring pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeloom.algos.comp import Calibration
from edgeloom.api.kinds.prunejob import CalibrationSource, PruneJobSpec
from edgeloom.data.text_pairs import docstring_pairs
from edgeloom.data.textcorpus import load_text_corpus, read_texts, stdlib_files
from edgeloom.models.llm import TransformerView, load_model
from edgeloom.models.sentence_encoder import (
    check_mean_pooling,
    embed,
    embedding_fidelity,
    encode_texts,
    retrieval_accuracy,
    sentence_embeddings,
)
from edgeloom.models.tiny_llama import perplexity, token_blocks

CALIBRATION_BATCH = 8
"""Sequences per calibration batch (the layer-at-a-time methods hold one tensor per batch)."""

TEXT_HOLDOUT_EVERY = 10
"""With ``calibration.source: text``, every 10th document is held out for evaluation."""


@dataclass
class Quality:
    """Quality figures of one model; ``headline`` is what status reports."""

    name: str
    values: dict[str, float]

    @property
    def headline(self) -> float:
        return self.values[self.name]


@dataclass
class PruneInputs:
    """A loaded model with its calibration data, loss and quality measure."""

    model: nn.Module
    tokenizer: object
    calibration: Calibration
    losses: Callable[[], Iterator[torch.Tensor]]
    measure: Callable[[nn.Module], Quality]

    @property
    def view(self) -> TransformerView:
        return TransformerView(self.model)


def prepare(spec: PruneJobSpec, folder: Path) -> PruneInputs:
    """Load the model in ``folder`` and build calibration and evaluation data for ``spec``."""
    model, tokenizer = load_model(folder)
    family = TransformerView(model).family
    if family == "decoder":
        return _causal_lm_inputs(spec, model, tokenizer)
    if spec.calibration.source == CalibrationSource.TEXT:
        raise ValueError(
            "calibration.source text needs a causal LM; sentence encoders calibrate on "
            "text pairs (calibration.source stdlib)"
        )
    check_mean_pooling(folder)
    return _encoder_inputs(spec, model, tokenizer)


def _causal_lm_inputs(spec: PruneJobSpec, model: nn.Module, tokenizer) -> PruneInputs:
    cal = spec.calibration
    if cal.source == CalibrationSource.TEXT:
        documents = load_text_corpus(Path(cal.path))
        train = [d for i, d in enumerate(documents) if i % TEXT_HOLDOUT_EVERY]
        heldout = documents[::TEXT_HOLDOUT_EVERY]
    else:
        train, heldout = read_texts(stdlib_files("train")), read_texts(stdlib_files("heldout"))
    calibration = _random_blocks(tokenizer, train, cal.samples, cal.sequence_length, spec.seed)
    evaluation = _spread(
        token_blocks(tokenizer, heldout, cal.sequence_length), spec.evaluation.samples
    )
    if len(evaluation) == 0:
        raise ValueError(f"held-out data gives no sequence of {cal.sequence_length} tokens")
    batches = [{"input_ids": b} for b in calibration.split(CALIBRATION_BATCH)]

    def losses() -> Iterator[torch.Tensor]:
        for batch in batches:
            yield model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss * (
                len(batch["input_ids"]) / len(calibration)
            )

    def measure(candidate: nn.Module) -> Quality:
        return Quality("perplexity", {"perplexity": perplexity(candidate, evaluation)})

    return PruneInputs(model, tokenizer, Calibration(batches), losses, measure)


def _encoder_inputs(spec: PruneJobSpec, model: nn.Module, tokenizer) -> PruneInputs:
    length = spec.calibration.sequence_length
    pairs = docstring_pairs("train")
    chosen = random.Random(spec.seed).sample(pairs, min(spec.calibration.samples, len(pairs)))
    heldout = docstring_pairs("heldout", limit=spec.evaluation.samples)
    queries = encode_texts(tokenizer, [q for q, _ in chosen], max_length=length)
    documents = encode_texts(tokenizer, [d for _, d in chosen], max_length=length)
    batches = [_rows(queries, s) for s in _spans(len(chosen))]
    batches += [_rows(documents, s) for s in _spans(len(chosen))]

    eval_queries = encode_texts(tokenizer, [q for q, _ in heldout], max_length=length)
    eval_documents = encode_texts(tokenizer, [d for _, d in heldout], max_length=length)
    reference = torch.cat([embed(model, eval_queries), embed(model, eval_documents)])

    def losses() -> Iterator[torch.Tensor]:
        # In-batch contrastive loss of the pairs, the objective the encoder was trained for.
        for span in _spans(len(chosen)):
            q = sentence_embeddings(model, _rows(queries, span))
            d = sentence_embeddings(model, _rows(documents, span))
            logits = q @ d.T / 0.05
            yield nn.functional.cross_entropy(logits, torch.arange(len(q))) * (len(q) / len(chosen))

    def measure(candidate: nn.Module) -> Quality:
        q, d = embed(candidate, eval_queries), embed(candidate, eval_documents)
        return Quality(
            "embedding_fidelity",
            {
                "embedding_fidelity": embedding_fidelity(reference, torch.cat([q, d])),
                "retrieval_accuracy": retrieval_accuracy(q, d),
            },
        )

    return PruneInputs(model, tokenizer, Calibration(batches), losses, measure)


def _random_blocks(
    tokenizer, documents: list[str], samples: int, length: int, seed: int
) -> torch.Tensor:
    """``samples`` blocks of ``length`` tokens from randomly ordered documents.

    Only as many documents are tokenised as the blocks need (about 4 characters a token
    first, twice as many when that falls short), not the whole corpus.
    """
    shuffled = list(documents)
    random.Random(seed).shuffle(shuffled)
    wanted_chars = 4 * samples * length
    while True:
        chosen, chars = [], 0
        for document in shuffled:
            if chars >= wanted_chars:
                break
            chosen.append(document)
            chars += len(document)
        blocks = token_blocks(tokenizer, chosen, length, samples)
        if len(blocks) == samples or len(chosen) == len(shuffled):
            break
        wanted_chars *= 2
    if len(blocks) == 0:
        raise ValueError(f"calibration data gives no sequence of {length} tokens")
    return blocks


def _spread(blocks: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` blocks evenly spread over all of them (the whole held-out set is sampled)."""
    if count >= len(blocks):
        return blocks
    return blocks[[i * len(blocks) // count for i in range(count)]]


def _spans(count: int) -> list[slice]:
    return [slice(s, s + CALIBRATION_BATCH) for s in range(0, count, CALIBRATION_BATCH)]


def _rows(batch: dict[str, torch.Tensor], span: slice) -> dict[str, torch.Tensor]:
    return {name: tensor[span] for name, tensor in batch.items()}
