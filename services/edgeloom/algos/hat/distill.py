"""Training the adapter by distillation from the full model.

The draft ``out_sub(adapter(in_sub(x)))`` learns the full model's next-token distribution: the
loss is ``KL(p_full || p_draft)`` per token, which is Kangaroo's soft cross-entropy
``-sum p_full log p_draft`` less the full model's entropy (a constant for the adapter). Only the
adapter learns; the model stays frozen. The figure that matters for speculation is the top-1
agreement: how often the draft's argmax is the full model's, the greedy acceptance rate of a
draft token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgeloom.algos.hat.adapter import Adapter
from edgeloom.algos.hat.split import HatParts
from edgeloom.models.tiny_llama import warmup_cosine


@dataclass(frozen=True)
class DistillSettings:
    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class DraftQuality:
    """How close the draft is to the full model on some token blocks."""

    kl: float
    """Mean per-token KL(p_full || p_draft) in nats."""
    agreement: float
    """Fraction of positions where the draft's argmax is the full model's."""


def draft_quality(
    parts: HatParts, adapter: Adapter, blocks: torch.Tensor, batch_size: int = 8
) -> DraftQuality:
    """KL and top-1 agreement of the draft against the full model on ``(n, seq_len)`` blocks."""
    total_kl, agree, count = 0.0, 0, 0
    with torch.inference_mode():
        for batch in blocks.split(batch_size):
            teacher, student = _log_probs(parts, adapter, batch)
            total_kl += float(_kl(teacher, student, reduction="sum"))
            agree += int((teacher.argmax(-1) == student.argmax(-1)).sum())
            count += teacher.shape[0]
    return DraftQuality(kl=total_kl / count, agreement=agree / count)


def distill(
    parts: HatParts,
    adapter: Adapter,
    blocks: torch.Tensor,
    settings: DistillSettings,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``adapter`` on ``(n, seq_len)`` token blocks; the loss of every step.

    AdamW with linear warm-up then cosine decay and gradient clipping (Kangaroo's recipe, with a
    learning rate for adapters trained from a warm start). ``progress(step, loss)`` is called
    after each step.
    """
    if blocks.ndim != 2 or blocks.shape[0] == 0:
        raise ValueError(
            f"need a non-empty (n, seq_len) tensor of token blocks, got {tuple(blocks.shape)}"
        )
    model = parts.view.model
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        adapter.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, settings.warmup_steps, settings.steps)
    )
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    adapter.train()
    try:
        for step in range(settings.steps):
            rows = torch.randint(0, blocks.shape[0], (settings.batch_size,), generator=generator)
            teacher, student = _log_probs(parts, adapter, blocks[rows])
            loss = _kl(teacher, student, reduction="mean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter.parameters(), settings.grad_clip)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step + 1, losses[-1])
    finally:
        adapter.eval()
        for parameter, flag in zip(model.parameters(), frozen, strict=True):
            parameter.requires_grad_(flag)
    return losses


def _log_probs(
    parts: HatParts, adapter: Adapter, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities ``(tokens, vocab)`` of the full model and of the draft."""
    with torch.no_grad():
        hidden = parts.run(parts.input_blocks, parts.embed(batch))
        middle = parts.run(parts.middle_blocks, hidden)
        teacher = parts.logits(parts.run(parts.output_blocks, middle))
    student = parts.logits(parts.run(parts.output_blocks, adapter(hidden)))
    return (
        F.log_softmax(teacher.float(), -1).flatten(0, 1),
        F.log_softmax(student.float(), -1).flatten(0, 1),
    )


def _kl(teacher: torch.Tensor, student: torch.Tensor, reduction: str) -> torch.Tensor:
    per_token = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)
    return per_token.sum() if reduction == "sum" else per_token.mean()
