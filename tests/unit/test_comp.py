"""COMP and its baselines on tiny models built from a config."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeloom.algos.comp import (
    Calibration,
    CompOptions,
    NormalEquations,
    block_influence,
    comp_prune,
    flap_prune,
    llm_pruner_prune,
    magnitude_prune,
    select_neurons,
    shortgpt_prune,
    solve_mask,
)
from edgeloom.algos.comp.budget import select_layers, spread
from edgeloom.models.llm import TransformerView
from edgeloom_testkit.tiny_llms import tiny_bert, tiny_llama, token_batch


def calibration(batches: int = 2, seed: int = 1) -> Calibration:
    return Calibration([token_batch(batch=4, length=16, seed=seed + i) for i in range(batches)])


def lm_losses(model, cal: Calibration):
    for batch in cal.batches:
        yield model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


def make_identity(view: TransformerView, index: int) -> None:
    """Zero a pre-norm block's output projections: the block then passes its input through."""
    with torch.no_grad():
        view.attention(view.layers[index]).o.weight.zero_()
        view.mlp(view.layers[index]).output.weight.zero_()


# --- budget ---------------------------------------------------------------------------------


def test_select_layers_takes_least_important_closest_to_budget():
    importance = [0.5, 0.1, 0.3, 0.2]
    assert select_layers(importance, [10] * 4, budget=24) == [1, 3]
    assert select_layers(importance, [10] * 4, budget=26) == [1, 2, 3]
    assert select_layers(importance, [10] * 4, budget=4) == []
    assert select_layers(importance, [10] * 4, budget=1000) == [1, 2, 3]  # one always stays


def test_spread_is_even_and_respects_capacities():
    assert spread(10, [5, 5, 5]) == [4, 3, 3]
    assert spread(10, [1, 20, 20]) == [1, 5, 4]
    assert spread(100, [2, 3]) == [2, 3]
    assert spread(0, [4, 4]) == [0, 0]


# --- mask problem ---------------------------------------------------------------------------


def test_solve_mask_recovers_a_known_mask():
    torch.manual_seed(0)
    hidden, weight = torch.randn(500, 6), torch.randn(8, 6)
    true_mask = torch.tensor([1.0, 1.2, 0.8, 1.1, 0.9, 1.0])
    target = (hidden * true_mask) @ weight.T
    equations = NormalEquations.from_activations(hidden, target, weight)
    keep = torch.arange(6)
    mask, ridge = solve_mask(equations, keep, variance_bound=10.0)
    torch.testing.assert_close(mask, true_mask, atol=1e-4, rtol=0)
    assert ridge == 0.0
    assert equations.residual(keep, mask) < 1e-6  # float32 batch products
    assert equations.residual(keep, torch.ones(6)) > 1e-3


def test_variance_bound_is_enforced_by_ridge_towards_ones():
    torch.manual_seed(0)
    hidden, weight = torch.randn(500, 6), torch.randn(8, 6)
    wild = torch.tensor([3.0, -1.0, 0.2, 2.5, 1.0, -2.0])
    equations = NormalEquations.from_activations(hidden, (hidden * wild) @ weight.T, weight)
    mask, ridge = solve_mask(equations, torch.arange(6), variance_bound=0.1)
    assert float(mask.var()) <= 0.1 and ridge > 0


def test_redundant_neuron_is_pruned_and_compensated_exactly():
    """A neuron duplicated by another scores lowest (OBS / variance inflation), not the weakest."""
    torch.manual_seed(0)
    hidden = torch.randn(400, 6)
    hidden[:, 4] = hidden[:, 1]  # neuron 4 duplicates neuron 1
    weight = torch.randn(8, 6)
    weight[:, 4] = weight[:, 1]
    weight[:, 5] *= 0.05  # a weak but unique neuron
    target = hidden @ weight.T
    equations = NormalEquations.from_activations(hidden, target, weight)

    keep = select_neurons(equations, remove=1, steps=1, variance_bound=10.0)

    assert set(range(6)) - set(keep.tolist()) in ({1}, {4})
    mask, _ = solve_mask(equations, keep, variance_bound=10.0)
    assert equations.residual(keep, mask) < 1e-6  # the twin doubles its scale
    assert equations.residual(keep, torch.ones(5)) > 0.05  # without mask tuning it cannot


def test_select_neurons_removes_exactly_the_requested_count():
    torch.manual_seed(0)
    hidden, weight = torch.randn(300, 20), torch.randn(8, 20)
    equations = NormalEquations.from_activations(hidden, hidden @ weight.T, weight)
    for remove, steps in [(0, 3), (7, 3), (19, 4)]:
        keep = select_neurons(equations, remove, steps, variance_bound=1.0)
        assert keep.numel() == 20 - remove and torch.equal(keep, keep.sort().values)
    with pytest.raises(ValueError, match="cannot remove 20 of 20"):
        select_neurons(equations, 20, 1, 1.0)


# --- layers ---------------------------------------------------------------------------------


def test_block_influence_finds_the_identity_block():
    view = TransformerView(tiny_llama(layers=4))
    make_identity(view, 2)
    scores = block_influence(view, calibration())
    assert scores[2] == pytest.approx(0.0, abs=1e-5)
    assert min(range(4), key=scores.__getitem__) == 2


def test_shortgpt_removes_the_identity_block_without_changing_outputs():
    model = tiny_llama(layers=4)
    view = TransformerView(model)
    make_identity(view, 1)
    batch = token_batch()
    with torch.no_grad():
        before = model(input_ids=batch["input_ids"]).logits
    report = shortgpt_prune(view, calibration(), ratio=0.25)
    assert report.removed_layers == [1]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=batch["input_ids"]).logits, before)


# --- whole methods ----------------------------------------------------------------------------


def prune_with(method: str, model, cal: Calibration, ratio: float):
    view = TransformerView(model)
    if method == "comp":
        return comp_prune(view, cal, CompOptions(ratio))
    if method == "llm-pruner":
        return llm_pruner_prune(view, lm_losses(model, cal), ratio)
    if method == "flap":
        return flap_prune(view, cal, ratio)
    return magnitude_prune(view, ratio)


@pytest.mark.parametrize("method", ["comp", "llm-pruner", "flap", "magnitude"])
@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_methods_reach_the_ratio_and_the_model_still_runs(method, ratio):
    model = tiny_llama(layers=4)
    report = prune_with(method, model, calibration(), ratio)
    achieved = 1 - report.params_after / report.params_before
    assert achieved == pytest.approx(ratio, abs=0.03)
    batch = token_batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
    assert logits.shape == (4, 12, 64) and torch.isfinite(logits).all()


def test_comp_stages_and_mask_tuning_reduce_each_blocks_error():
    base = tiny_llama(layers=4)
    cal = calibration()
    stages = []
    tuned = comp_prune(
        TransformerView(copy.deepcopy(base)),
        cal,
        CompOptions(0.3, variance_bound=1.0),
        lambda stage, done, total: stages.append(stage),
    )
    untuned = comp_prune(
        TransformerView(copy.deepcopy(base)), cal, CompOptions(0.3, mask_tuning=False)
    )
    assert stages[0] == "LayerPruning" and {"NeuronPruning", "MaskTuning"} <= set(stages)
    assert tuned.removed_layers == untuned.removed_layers and len(tuned.removed_layers) == 1
    assert all(v <= 1.0 for v in tuned.mask_variance)
    assert all(t <= u + 1e-9 for t, u in zip(tuned.fit_error, untuned.fit_error, strict=True))
    assert sum(tuned.fit_error) < sum(untuned.fit_error)


def test_comp_without_layer_share_keeps_every_layer():
    view = TransformerView(tiny_llama(layers=4))
    report = comp_prune(view, calibration(), CompOptions(0.2, layer_share=0.0))
    assert report.removed_layers == [] and len(view.layers) == 4
    assert all(w.intermediate_size < 96 for w in view.widths())


def test_llm_pruner_spares_first_and_last_blocks_and_needs_gradients():
    model = tiny_llama(layers=8)
    view = TransformerView(model)
    llm_pruner_prune(view, lm_losses(model, calibration()), 0.2)
    widths = view.widths()
    assert widths[0].intermediate_size == 96 and widths[-1].intermediate_size == 96
    assert all(w.intermediate_size < 96 for w in widths[1:-1])
    assert all(p.grad is None for p in model.parameters())


def test_flap_compensates_pruned_channels_with_a_bias():
    model = tiny_llama(layers=4)
    view = TransformerView(model)
    flap_prune(view, calibration(), 0.2)
    assert any(w.mlp_output_bias for w in view.widths())


def test_comp_prunes_an_encoder_with_padding():
    model = tiny_bert(layers=3)
    batches = [token_batch(batch=4, length=16, seed=s) for s in (1, 2)]
    batches[0]["attention_mask"][:, 10:] = 0
    view = TransformerView(model)
    report = comp_prune(view, Calibration(batches), CompOptions(0.2, layer_share=0.0))
    assert 1 - report.params_after / report.params_before == pytest.approx(0.2, abs=0.03)
    with torch.no_grad():
        assert torch.isfinite(model(**token_batch()).last_hidden_state).all()
