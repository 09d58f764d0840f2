"""The baselines COMP is measured against, built as carefully as COMP itself.

- ``shortgpt``: remove the blocks of lowest Block Influence, nothing else (Men et al. 2024;
  ``sramshetty/ShortGPT`` ``block_influence``).
- ``magnitude``: structured magnitude pruning; each head group and MLP neuron scored by the
  L2 norm of all its weights, the same fraction removed in every block.
- ``llm-pruner``: LLM-Pruner's block-wise Taylor pruning (Ma et al. 2023, ``horseee/LLM-Pruner``
  ``hf_prune.py --pruner_type taylor --taylor param_first``): element-wise first-order
  importance ``|w ∂L/∂w|`` summed over each coupled group, one gradient of the calibration
  loss through the whole model, the same ratio for heads and neurons in the middle blocks
  (the repository skips the first 4 and last 2 of 32 blocks; here the first and last
  ``L/8`` and ``L/16``, at least one each). No LoRA recovery, as in COMP's comparison.
- ``flap``: FLAP (An et al. 2024, ``CASIA-IVA-Lab/FLAP`` ``lib/prune.py``) with its defaults
  for Llama: the WIFV metric (variance of each channel's input over the calibration tokens
  times the squared norm of its output-weight column), AL-AM structure (scores standardised
  per module type across all blocks, one global threshold weighted by parameter cost) and
  bias compensation (the mean contribution of pruned channels is added to the output bias).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from edgeloom.algos.comp.budget import (
    head_group_cost,
    layer_cost,
    neuron_cost,
    select_layers,
    spread,
)
from edgeloom.algos.comp.calibration import Calibration, LayerStream, capture_inputs
from edgeloom.algos.comp.comp import PruneReport
from edgeloom.algos.comp.layers import block_influence
from edgeloom.models.llm import (
    Attention,
    Mlp,
    TransformerView,
    add_output_bias,
    drop_layers,
    group_channels,
    keep_head_groups,
    keep_mlp_neurons,
)


def shortgpt_prune(view: TransformerView, calibration: Calibration, ratio: float) -> PruneReport:
    """Remove the least influential blocks, as close to ``ratio`` as whole blocks allow."""
    report = PruneReport("shortgpt", view.block_parameters())
    report.layer_importance = block_influence(view, calibration)
    costs = [layer_cost(layer) for layer in view.layers]
    report.removed_layers = select_layers(
        report.layer_importance, costs, ratio * report.params_before
    )
    drop_layers(view, report.removed_layers)
    return report.finish(view)


def magnitude_prune(view: TransformerView, ratio: float) -> PruneReport:
    """Remove the head groups and neurons with the smallest weight norms, uniformly per block."""
    report = PruneReport("magnitude", view.block_parameters())
    scores = {
        i: (_group_weight_norms(view.attention(layer)), _neuron_weight_norms(view.mlp(layer)))
        for i, layer in enumerate(view.layers)
    }
    _prune_uniformly(view, scores, ratio * report.params_before)
    return report.finish(view)


def llm_pruner_prune(
    view: TransformerView, losses: Iterable[torch.Tensor], ratio: float
) -> PruneReport:
    """LLM-Pruner block-wise Taylor pruning; ``losses`` yields calibration losses lazily.

    The gradients of every loss are accumulated over the whole model before scoring, which is
    what makes this method's memory grow with the model (COMP's memory claim is against it).
    """
    report = PruneReport("llm-pruner", view.block_parameters())
    model = view.model
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for loss in losses:
            loss.backward()
    count = len(view.layers)
    start, end = max(1, round(count / 8)), count - max(1, round(count / 16))
    scores = {
        i: (_group_taylor(view.attention(view.layers[i])), _neuron_taylor(view.mlp(view.layers[i])))
        for i in range(start, max(end, start + 1))
    }
    model.zero_grad(set_to_none=True)
    _prune_uniformly(view, scores, ratio * report.params_before)
    return report.finish(view)


def flap_prune(view: TransformerView, calibration: Calibration, ratio: float) -> PruneReport:
    """FLAP: WIFV scores, global AL-AM threshold, bias compensation."""
    report = PruneReport("flap", view.block_parameters())
    layers = list(view.layers)
    stream = LayerStream(view, calibration)
    stats = []
    for layer in layers:
        attn, mlp = view.attention(layer), view.mlp(layer)
        with capture_inputs(attn.o) as heads, capture_inputs(mlp.output) as neurons:
            stream.step(layer)
        stats.append((_moments(stream.tokens(heads)), _moments(stream.tokens(neurons))))

    units = []  # (standardised score, cost, layer, kind, index)
    for kind in (0, 1):
        raw = []
        for i, layer in enumerate(layers):
            mean_var = stats[i][kind]
            if kind == 0:
                attn = view.attention(layer)
                channel = mean_var[1] * attn.o.weight.detach().pow(2).sum(0)
                raw.append(channel.reshape(attn.num_groups, -1).sum(1))
            else:
                mlp = view.mlp(layer)
                raw.append(mean_var[1] * mlp.output.weight.detach().pow(2).sum(0))
        flat = torch.cat(raw)
        std = flat.std() if flat.numel() > 1 else torch.tensor(1.0)
        for i, values in enumerate(raw):
            cost = (
                head_group_cost(view.attention(layers[i]))
                if kind == 0
                else neuron_cost(view.mlp(layers[i]))
            )
            standardised = (values - flat.mean()) / (std + 1e-12)
            units += [(float(s), cost, i, kind, j) for j, s in enumerate(standardised)]

    removed: dict[tuple[int, int], list[int]] = {}
    budget, total = ratio * report.params_before, 0
    for _, cost, i, kind, j in sorted(units):
        size = view.attention(layers[i]).num_groups if kind == 0 else view.mlp(layers[i]).width
        chosen = removed.setdefault((i, kind), [])
        if len(chosen) + 1 >= size or abs(total + cost - budget) >= abs(total - budget):
            continue
        chosen.append(j)
        total += cost
    for (i, kind), pruned in removed.items():
        mean = stats[i][kind][0]
        if kind == 0:
            attn = view.attention(layers[i])
            channels = group_channels(attn, torch.tensor(pruned, dtype=torch.long))
            add_output_bias(attn.o, attn.o.weight.detach()[:, channels] @ mean[channels])
            keep_head_groups(attn, _complement(pruned, attn.num_groups))
        else:
            mlp = view.mlp(layers[i])
            index = torch.tensor(pruned, dtype=torch.long)
            add_output_bias(mlp.output, mlp.output.weight.detach()[:, index] @ mean[index])
            keep_mlp_neurons(mlp, _complement(pruned, mlp.width))
    return report.finish(view)


def _prune_uniformly(
    view: TransformerView,
    scores: dict[int, tuple[torch.Tensor, torch.Tensor]],
    budget: float,
) -> None:
    """Remove the same fraction of head groups and neurons in each scored block.

    Head groups are coarse, so their count is rounded per block first; neurons then make up
    the exact remaining budget, spread evenly over the scored blocks.
    """
    layers = list(view.layers)
    prunable = sum(
        head_group_cost(view.attention(layers[i])) * view.attention(layers[i]).num_groups
        + neuron_cost(view.mlp(layers[i])) * view.mlp(layers[i]).width
        for i in scores
    )
    fraction = min(budget / prunable, 1.0) if prunable else 0.0
    removed = 0
    group_plan = {}
    for i in scores:
        attn = view.attention(layers[i])
        group_plan[i] = min(round(fraction * attn.num_groups), attn.num_groups - 1)
        removed += group_plan[i] * head_group_cost(attn)
    per_neuron = neuron_cost(view.mlp(layers[next(iter(scores))]))
    neuron_plan = spread(
        max(round((budget - removed) / per_neuron), 0),
        [view.mlp(layers[i]).width - 1 for i in scores],
    )
    for (i, (group_scores, neuron_scores)), neurons in zip(
        scores.items(), neuron_plan, strict=True
    ):
        attn, mlp = view.attention(layers[i]), view.mlp(layers[i])
        keep_head_groups(attn, _top(group_scores, attn.num_groups - group_plan[i]))
        keep_mlp_neurons(mlp, _top(neuron_scores, mlp.width - neurons))


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    return torch.topk(scores, count).indices.sort().values


def _complement(pruned: list[int], size: int) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[pruned] = False
    return keep.nonzero().squeeze(1)


def _moments(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) variance over calibration tokens."""
    tokens = tokens.double()
    return tokens.mean(0).float(), tokens.var(0).float()


ElementScore = Callable[[torch.Tensor], torch.Tensor]
"""An element-wise importance of a weight matrix."""


def _squared(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().pow(2)


def _taylor(weight: torch.Tensor) -> torch.Tensor:
    """First-order Taylor importance ``|w ∂L/∂w|``."""
    if weight.grad is None:
        raise ValueError("a weight has no gradient: backpropagate the calibration losses first")
    return (weight.detach() * weight.grad).abs()


def _group_weight_norms(attn: Attention) -> torch.Tensor:
    return _per_group(attn, _squared).sqrt()


def _neuron_weight_norms(mlp: Mlp) -> torch.Tensor:
    return _per_neuron(mlp, _squared).sqrt()


def _group_taylor(attn: Attention) -> torch.Tensor:
    return _per_group(attn, _taylor)


def _neuron_taylor(mlp: Mlp) -> torch.Tensor:
    return _per_neuron(mlp, _taylor)


def _per_neuron(mlp: Mlp, element: ElementScore) -> torch.Tensor:
    """Sum an element-wise score over each neuron's input rows and output column."""
    total = element(mlp.output.weight).sum(0)
    for linear in mlp.inputs:
        total = total + element(linear.weight).sum(1)
    return total


def _per_group(attn: Attention, element: ElementScore) -> torch.Tensor:
    """Sum an element-wise score over each head group's q/k/v rows and o columns."""
    groups = attn.num_groups
    q = element(attn.q.weight).sum(1).reshape(groups, -1).sum(1)
    k = element(attn.k.weight).sum(1).reshape(groups, -1).sum(1)
    v = element(attn.v.weight).sum(1).reshape(groups, -1).sum(1)
    o = element(attn.o.weight).sum(0).reshape(groups, -1).sum(1)
    return q + k + v + o
