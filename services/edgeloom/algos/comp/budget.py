"""Parameter costs of the prunable structures, and turning a ratio into counts.

A pruning ratio is the fraction of *block* parameters removed (attention, MLP and norms of the
transformer layers); embeddings and the LM head are never pruned, so they are left out of the
ratio, as structured-pruning papers do when they prune "20 % of the layers' parameters".
"""

from __future__ import annotations

from torch import nn

from edgeloom.models.llm import Attention, Mlp


def linear_row_cost(linear: nn.Linear) -> int:
    """Parameters in one output row of a projection (weights plus its bias entry)."""
    return linear.in_features + (1 if linear.bias is not None else 0)


def neuron_cost(mlp: Mlp) -> int:
    """Parameters removed with one hidden neuron of a dense block."""
    return sum(linear_row_cost(linear) for linear in mlp.inputs) + mlp.output.out_features


def head_group_cost(attn: Attention) -> int:
    """Parameters removed with one head group (its query heads, key/value head, output columns)."""
    q_rows = attn.head_dim * attn.heads_per_group
    return (
        q_rows * linear_row_cost(attn.q)
        + attn.head_dim * (linear_row_cost(attn.k) + linear_row_cost(attn.v))
        + q_rows * attn.o.out_features
    )


def layer_cost(layer: nn.Module) -> int:
    """Parameters removed with a whole block."""
    return sum(p.numel() for p in layer.parameters())


def select_layers(importance: list[float], costs: list[int], budget: float) -> list[int]:
    """Least important layers whose removal comes closest to ``budget`` parameters.

    Layers are taken in increasing importance while the running total gets closer to the
    budget; at least one layer always stays.
    """
    order = sorted(range(len(importance)), key=lambda i: importance[i])
    chosen: list[int] = []
    removed = 0
    for i in order[:-1]:
        if abs(removed + costs[i] - budget) >= abs(removed - budget):
            break
        chosen.append(i)
        removed += costs[i]
    return sorted(chosen)


def spread(total: int, slots: list[int]) -> list[int]:
    """Split ``total`` units as evenly as possible over slots of the given capacities."""
    counts = [0] * len(slots)
    remaining = total
    open_slots = [i for i, cap in enumerate(slots) if cap > 0]
    while remaining > 0 and open_slots:
        share, extra = divmod(remaining, len(open_slots))
        for rank, i in enumerate(list(open_slots)):
            take = min(slots[i] - counts[i], share + (1 if rank < extra else 0))
            counts[i] += take
            remaining -= take
        open_slots = [i for i in open_slots if counts[i] < slots[i]]
    return counts
