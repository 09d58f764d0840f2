"""Modelled compute cost: FLOPs per sample, counted once, linear in the batch, side-effect free."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeloom.models.split_cnn import build_model, split_model
from edgeloom.runtime.device import REFERENCE_FLOPS_PER_SECOND, ComputeCost


def test_a_linear_layer_costs_two_flops_per_multiply_add() -> None:
    cost = ComputeCost.of(nn.Linear(10, 20), (10,))
    assert cost.forward == 2 * 10 * 20
    assert cost.backward == 2 * 10 * 20  # the weight gradient only: the input needs none
    assert cost.seconds(4) == pytest.approx(4 * 800 / REFERENCE_FLOPS_PER_SECOND)
    assert cost.seconds(4, backward=False) == pytest.approx(4 * 400 / REFERENCE_FLOPS_PER_SECOND)
    assert cost.seconds(4, forward=False) == pytest.approx(4 * 400 / REFERENCE_FLOPS_PER_SECOND)
    with_input = ComputeCost.of(nn.Linear(10, 20), (10,), input_grad=True)
    assert with_input.backward == 2 * cost.backward  # and the input's gradient


def test_the_cost_of_a_split_cnn_scales_with_the_batch() -> None:
    torch.manual_seed(0)
    bottom, top = split_model(build_model("cnn1d", 10, (1, 40)), 2)
    one = ComputeCost.of(bottom, (1, 40))
    batch = _count(bottom, (8, 1, 40))
    assert batch == 8 * one.forward
    assert ComputeCost.of(top, (64, 10)).forward > 0


def test_counting_leaves_the_module_and_the_rng_untouched() -> None:
    torch.manual_seed(0)
    model = build_model("cifar-alexnet", 10, (1, 28, 28))  # has dropout
    model.train()
    state = torch.random.get_rng_state()
    before = [p.detach().clone() for p in model.parameters()]
    ComputeCost.of(model, (1, 28, 28))
    assert model.training
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _count(module: nn.Module, shape: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.zeros(shape))
    return int(counter.get_total_flops())
