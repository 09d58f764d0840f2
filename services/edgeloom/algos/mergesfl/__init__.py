"""MergeSFL: split federated learning with feature merging and batch-size regulation.

Liao, Xu, Xu, Wang, Yao and Qiao, "MergeSFL: Split Federated Learning with Feature Merging and
Batch Size Regulation", ICDE 2024, pp. 2054-2067, arXiv:2311.13348.

What follows the official code (github.com/ymliao98/MergeSFL):

* the training step: workers send bottom-model features and labels, the server concatenates
  them into one mixed batch (:func:`merge_features`), trains the top model on the mean loss,
  and returns each worker its gradient rows rescaled by ``Σb / b_i`` (:func:`split_gradients`);
* bottom models are averaged after each round (:func:`aggregate_bottom_models`; the code
  averages uniformly, the paper aggregates adaptively, here by batch size ``b_i / Σb`` as in
  the group's AdaSFL code).

What is a documented reconstruction (``papers.md`` section 1, marked [R]), because the official
control step is a stub that picks random workers with equal batch sizes:

* batch-size regulation ``b_i = B v_i / Σ v_j``, ``v_i = 1 / (μ_i + 2s/β_i)``, with bounds and
  integer rounding (:func:`regulate_batch_sizes`);
* worker selection minimising ``KL(P_m ‖ U)`` of the batch-weighted merged label distribution
  under a per-iteration time budget, by exhaustive search or a genetic algorithm
  (:func:`select_workers`);
* the paper's joint optimisation of the two, as the divergence-minimising batch sizes of a
  set within a slack over its regulated iteration time (:func:`joint_batch_sizes`).

Everything here is pure: tensors, arrays and a validated :class:`MergeSFLConfig` in, tensors,
lists and dataclasses out; the device follows the inputs.
"""

from edgeloom.algos.mergesfl.aggregation import aggregate_bottom_models
from edgeloom.algos.mergesfl.baselines import (
    random_select,
    uniform_batch_sizes,
)
from edgeloom.algos.mergesfl.config import MergeSFLConfig
from edgeloom.algos.mergesfl.joint import JointBatches, joint_batch_sizes
from edgeloom.algos.mergesfl.labels import kl_divergence, merged_label_distribution
from edgeloom.algos.mergesfl.merging import merge_features, split_gradients
from edgeloom.algos.mergesfl.regulation import predicted_iteration_times, regulate_batch_sizes
from edgeloom.algos.mergesfl.selection import (
    SelectionProblem,
    WorkerSelection,
    exhaustive_select,
    genetic_select,
    score_selection,
    select_workers,
)

__all__ = [
    "JointBatches",
    "MergeSFLConfig",
    "SelectionProblem",
    "WorkerSelection",
    "aggregate_bottom_models",
    "exhaustive_select",
    "genetic_select",
    "joint_batch_sizes",
    "kl_divergence",
    "merge_features",
    "merged_label_distribution",
    "predicted_iteration_times",
    "random_select",
    "regulate_batch_sizes",
    "score_selection",
    "select_workers",
    "split_gradients",
    "uniform_batch_sizes",
]
