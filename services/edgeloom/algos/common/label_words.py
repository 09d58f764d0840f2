"""Classification with a causal LM by scoring label words, the same way for every method.

A text becomes a prompt in the model's chat template (the user asks the task's question about
the text; the assistant's turn is opened), and each class is one label word. The score of a class
is the summed log-probability of its label word's tokens as the start of the assistant's reply;
the prediction is the best-scoring class. Without a chat template the prompt is plain text ending
in ``Answer:`` and label words follow a space. The same tokens are the target of fine-tuning
(:func:`label_examples`), so training and measuring agree on what the model must say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class LabelTask:
    """A question asked about each text, and one label word per class (in class order)."""

    question: str
    labels: tuple[str, ...]
    max_text_tokens: int = 256
    """Texts are cut to this many tokens before they go into the prompt."""

    def __post_init__(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"a task needs two or more distinct label words, got {self.labels}")


SENTIMENT = LabelTask(
    "Is the sentiment of this text positive or negative? Answer with one word.",
    ("negative", "positive"),
)
TOPICS = LabelTask(
    "Which topic is this news article about: business, entertainment, politics, sports or "
    "tech? Answer with one word.",
    ("business", "entertainment", "politics", "sports", "tech"),
)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, task: LabelTask, text: str) -> list[int]:
    """The prompt's tokens, up to where the answer starts."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: task.max_text_tokens]
    short = tokenizer.decode(ids)
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": f"{task.question}\n\n{short}"}]
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer(str(rendered), add_special_tokens=False)["input_ids"])
    plain = f"{task.question}\n\nText: {short}\nAnswer:"
    return list(tokenizer(plain)["input_ids"])


def label_ids(tokenizer: PreTrainedTokenizerBase, task: LabelTask) -> list[list[int]]:
    """Each label word's tokens as the answer's start (after a space without a template)."""
    lead = "" if tokenizer.chat_template else " "
    return [tokenizer(lead + word, add_special_tokens=False)["input_ids"] for word in task.labels]


def label_examples(
    tokenizer: PreTrainedTokenizerBase, task: LabelTask, texts: Sequence[str], labels: Sequence[int]
) -> list[tuple[list[int], list[int]]]:
    """``(prompt tokens, label tokens)`` of each text: the fine-tuning target."""
    words = label_ids(tokenizer, task)
    return [(prompt_ids(tokenizer, task, t), words[y]) for t, y in zip(texts, labels, strict=True)]


@torch.inference_mode()
def label_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: LabelTask,
    texts: Sequence[str],
    batch_size: int = 16,
) -> torch.Tensor:
    """``(len(texts), classes)``: each label word's summed log-probability after each prompt."""
    words = label_ids(tokenizer, task)
    prompts = [prompt_ids(tokenizer, task, text) for text in texts]
    rows = [(prompt, word) for prompt in prompts for word in words]
    scores = torch.empty(len(rows))
    device = next(model.parameters()).device
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin : begin + batch_size]
        length = max(len(p) + len(w) for p, w in batch)
        ids = torch.zeros(len(batch), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prompt, word) in enumerate(batch):
            sequence = prompt + word
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        log_probs = F.log_softmax(logits, dim=-1).cpu()
        for row, (prompt, word) in enumerate(batch):
            positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(word))
            scores[begin + row] = log_probs[row, positions, torch.tensor(word)].sum()
    return scores.view(len(texts), len(words))


def label_accuracy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: LabelTask,
    texts: Sequence[str],
    labels: Sequence[int],
    batch_size: int = 16,
) -> float:
    """The fraction of texts whose best-scoring label word is their class's."""
    if len(texts) != len(labels) or not texts:
        raise ValueError("need as many labels as texts, at least one")
    predicted = label_scores(model, tokenizer, task, texts, batch_size).argmax(dim=1)
    return float((predicted == torch.tensor(list(labels))).float().mean())
