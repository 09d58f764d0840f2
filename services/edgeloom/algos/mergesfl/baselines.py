"""Helpers for the baselines that share MergeSFL's models, data and runtime.

* SplitFed V1 (Thapa et al., AAAI 2022): each worker has its own server-side copy of the top
  model; after a round the server averages the top copies and the workers' bottom models,
  both with :func:`edgeloom.algos.common.average_state_dicts`.
* FedAvg (McMahan et al., AISTATS 2017): whole models trained locally, averaged with
  :func:`edgeloom.algos.common.average_state_dicts` weighted by sample counts.
* The official MergeSFL code's control step and the ablations: :func:`random_select` picks
  workers uniformly at random, :func:`uniform_batch_sizes` gives every worker the same share of
  the merged batch (batch regulation switched off).

The maths is shared with the MergeSFL core rather than copied.
"""

from __future__ import annotations

import numpy as np

from edgeloom.algos.mergesfl.regulation import regulate_batch_sizes


def uniform_batch_sizes(
    total_batch: int, num_workers: int, min_batch: int, max_batch: int
) -> list[int]:
    """Split ``total_batch`` as evenly as the bounds allow (the first workers get the extra).

    This is :func:`~edgeloom.algos.mergesfl.regulate_batch_sizes` with equal worker speeds.
    """
    return regulate_batch_sizes(
        [1.0] * num_workers, [0.0] * num_workers, total_batch, min_batch, max_batch
    )


def random_select(num_workers: int, num_selected: int, rng: np.random.Generator) -> list[int]:
    """``num_selected`` distinct workers chosen uniformly at random, ascending."""
    if not 1 <= num_selected <= num_workers:
        raise ValueError(f"num_selected must be in [1, {num_workers}], got {num_selected}")
    return sorted(int(w) for w in rng.choice(num_workers, num_selected, replace=False))
