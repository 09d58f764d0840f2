"""COMP: layer pruning, then neuron pruning with mask tuning, one block at a time."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from edgeloom.algos.comp.budget import layer_cost, neuron_cost, select_layers, spread
from edgeloom.algos.comp.calibration import (
    Calibration,
    LayerStream,
    capture_inputs,
    capture_outputs,
)
from edgeloom.algos.comp.layers import block_influence
from edgeloom.algos.comp.masks import NormalEquations, select_neurons, solve_mask
from edgeloom.api.kinds.prunejob import PruneStage
from edgeloom.models.llm import Mlp, TransformerView, drop_layers, keep_mlp_neurons

Stage = PruneStage
"""COMP reports ``LayerPruning``, ``NeuronPruning`` and ``MaskTuning``."""

ProgressCallback = Callable[[Stage, int, int], None]
"""Called with ``(stage, blocks done, blocks total)``."""


@dataclass(frozen=True)
class CompOptions:
    """COMP's knobs.

    Attributes
    ----------
    ratio : float
        Fraction of block parameters to remove.
    layer_share : float
        Share of that budget taken by removing whole layers; neurons take the rest.
    mask_tuning : bool
        Rescale kept neurons by least squares (off: plain neuron removal).
    variance_bound : float
        Upper bound on the variance of each block's mask values.
    steps : int
        Rounds of remove-and-rescore inside each block.
    """

    ratio: float
    layer_share: float = 0.5
    mask_tuning: bool = True
    variance_bound: float = 0.25
    steps: int = 4


@dataclass
class PruneReport:
    """What a pruning method did to the model."""

    method: str
    params_before: int
    params_after: int = 0
    removed_layers: list[int] = field(default_factory=list)
    layer_importance: list[float] = field(default_factory=list)
    mask_variance: list[float] = field(default_factory=list)
    fit_error: list[float] = field(default_factory=list)

    def finish(self, view: TransformerView) -> PruneReport:
        self.params_after = view.block_parameters()
        return self


def comp_prune(
    view: TransformerView,
    calibration: Calibration,
    options: CompOptions,
    progress: ProgressCallback | None = None,
) -> PruneReport:
    """Prune ``view``'s model in place with COMP and report what was done.

    1. Layer pruning: Block Influence of every block; the least influential go first, up to
       ``layer_share`` of the parameter budget.
    2. Neuron pruning and mask tuning, block by block: the kept blocks see the hidden states
       of the already-pruned model (the *student*) and are fitted to the unpruned model's
       output at the same depth (the *teacher*), so each block also repairs error that reached
       it from above, including the error of removed layers. Only one block's activations
       are held at a time, and no gradient is ever computed.
    """
    notify = progress or (lambda *_: None)
    report = PruneReport("comp", view.block_parameters())
    layers = list(view.layers)
    costs = [layer_cost(layer) for layer in layers]
    target = options.ratio * report.params_before

    notify(Stage.LAYER_PRUNING, 0, len(layers))
    report.layer_importance = block_influence(view, calibration)
    report.removed_layers = select_layers(
        report.layer_importance, costs, options.layer_share * target
    )
    notify(Stage.LAYER_PRUNING, len(layers), len(layers))

    kept = [i for i in range(len(layers)) if i not in report.removed_layers]
    mlps = {i: view.mlp(layers[i]) for i in kept}
    neuron_budget = target - sum(costs[i] for i in report.removed_layers)
    per_neuron = neuron_cost(mlps[kept[0]]) if kept else 1
    removals = spread(max(round(neuron_budget / per_neuron), 0), [mlps[i].width - 1 for i in kept])
    plan = dict(zip(kept, removals, strict=True))

    teacher = LayerStream(view, calibration)
    student = LayerStream(view, calibration)
    for done, (i, layer) in enumerate(zip(range(len(layers)), layers, strict=True)):
        if i not in plan:  # removed: only the teacher goes through it
            teacher.step(layer)
            continue
        notify(Stage.NEURON_PRUNING, done, len(layers))
        equations = _block_equations(teacher, student, layer, mlps[i])
        keep = select_neurons(equations, plan[i], options.steps, options.variance_bound)
        notify(Stage.MASK_TUNING, done, len(layers))
        mask = (
            solve_mask(equations, keep, options.variance_bound)[0]
            if options.mask_tuning
            else torch.ones(keep.numel())
        )
        report.mask_variance.append(float(mask.var()) if mask.numel() > 1 else 0.0)
        report.fit_error.append(equations.residual(keep, mask))
        keep_mlp_neurons(mlps[i], keep)
        with torch.no_grad():
            mlps[i].output.weight.mul_(mask.to(mlps[i].output.weight.dtype))
        student.step(layer)
    drop_layers(view, report.removed_layers)
    notify(Stage.MASK_TUNING, len(layers), len(layers))
    return report.finish(view)


def _capture_sums(mlp: Mlp) -> AbstractContextManager[list[torch.Tensor]]:
    """Records the residual-plus-MLP sums of post-norm blocks (nothing for pre-norm ones)."""
    return capture_inputs(mlp.norm_after) if mlp.norm_after is not None else nullcontext([])


def _block_equations(
    teacher: LayerStream, student: LayerStream, layer: torch.nn.Module, mlp: Mlp
) -> NormalEquations:
    """The mask problem of one block, and the teacher moved past it.

    Batch by batch: the unpruned block's residual-plus-MLP sum on the teacher's input is the
    target; the student's MLP activations on its own input are the regressors. Only one
    batch's activations exist at a time; each teacher batch is replaced by its output.
    """
    bias = mlp.output.bias.detach() if mlp.output.bias is not None else 0.0
    weight = mlp.output.weight.detach()
    view = student.view
    total: NormalEquations | None = None
    for index, ((hidden, context, mask), (taught, t_context, _)) in enumerate(
        zip(student.batches(), teacher.batches(), strict=True)
    ):
        with _capture_sums(mlp) as sums, torch.no_grad():
            teacher_out = view.run_layer(layer, taught, t_context)
        wanted = sums[0] if mlp.norm_after is not None else teacher_out
        teacher.hidden[index] = teacher_out
        with (
            capture_inputs(mlp.output) as neurons,
            capture_outputs(mlp.output) as dense,
            _capture_sums(mlp) as sums,
            torch.no_grad(),
        ):
            output = view.run_layer(layer, hidden, context)
        summed = sums[0] if mlp.norm_after is not None else output
        # The rescaled dense output should be the teacher's sum minus the student's residual.
        target = wanted - (summed - dense[0]) - bias
        part = NormalEquations.from_activations(neurons[0][mask], target[mask], weight)
        total = part if total is None else total + part
    if total is None:
        raise ValueError("calibration has no batches")
    return total
