"""Validated settings of MergeSFL's control step (batch regulation and worker selection)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MergeSFLConfig:
    """Settings of batch-size regulation and the genetic worker selection.

    Attributes
    ----------
    total_batch_size : int
        Merged batch size per iteration, summed over the selected workers (``B``).
    min_batch_size, max_batch_size : int
        Bounds of one worker's batch.
    time_slack : float
        When no explicit time budget is given, the per-iteration time budget is
        ``(1 + time_slack)`` times the iteration time of the fastest ``K`` workers; ``inf``
        turns the time constraint off.
    penalty_weight : float
        Objective penalty per unit of relative budget overrun (``T / T_budget - 1``); the KL
        term is at most ``log C``, so the default 10 makes feasible selections win.
    population_size, generations, tournament_size, elite_count : int
        Genetic algorithm sizes; ``tournament_size`` and ``elite_count`` at most
        ``population_size``.
    crossover_rate : float
        Probability that a child comes from one-point crossover rather than a copy.
    mutation_rate : float or None
        Per-bit flip probability; ``None`` means ``1 / N``.
    batch_control : {"regulation", "joint"}
        How a candidate set's batch sizes are chosen: ``regulation`` equalises iteration times
        (:func:`~edgeloom.algos.mergesfl.regulate_batch_sizes`); ``joint`` minimises the merged
        label mix's divergence within ``(1 + joint_slack)`` times the regulated time
        (:func:`~edgeloom.algos.mergesfl.joint_batch_sizes`, the reconstruction of the paper's
        joint optimisation; about 1.6 ms per evaluation of 10 workers against regulation's
        0.2 ms, so lower ``exhaustive_limit`` with it).
    joint_slack : float
        Slack of the ``joint`` time bound over the regulated iteration time (0 leaves only
        rounding to trade: regulation already equalises every worker at that time).
    exhaustive_limit : int
        :func:`~edgeloom.algos.mergesfl.select_workers` enumerates every subset when there are
        at most this many (``C(N, K)``) and runs the genetic algorithm otherwise. At about
        0.2 ms per evaluation, the default 5000 bounds exact search to about a second on one
        CPU core, the same order as one GA run with the default sizes (up to 32 x 60
        evaluations), so the exact optimum is used wherever it is affordable.
    """

    total_batch_size: int = 320
    min_batch_size: int = 4
    max_batch_size: int = 128
    time_slack: float = 0.5
    penalty_weight: float = 10.0
    population_size: int = 32
    generations: int = 60
    tournament_size: int = 3
    crossover_rate: float = 0.9
    mutation_rate: float | None = None
    elite_count: int = 2
    exhaustive_limit: int = 5000
    batch_control: Literal["regulation", "joint"] = "regulation"
    joint_slack: float = 0.25

    def __post_init__(self) -> None:
        checks = [
            (self.total_batch_size >= 1, "total_batch_size must be at least 1"),
            (
                1 <= self.min_batch_size <= self.max_batch_size,
                "batch bounds need 1 <= min_batch_size <= max_batch_size",
            ),
            (self.time_slack >= 0, "time_slack must be non-negative (inf disables the budget)"),
            (0 <= self.penalty_weight < math.inf, "penalty_weight must be finite and >= 0"),
            (self.population_size >= 2, "population_size must be at least 2"),
            (self.generations >= 0, "generations must be non-negative"),
            (
                1 <= self.tournament_size <= self.population_size,
                "tournament_size must be between 1 and population_size",
            ),
            (
                0 <= self.elite_count < self.population_size,
                "elite_count must be between 0 and population_size - 1",
            ),
            (0 <= self.crossover_rate <= 1, "crossover_rate must be in [0, 1]"),
            (
                self.mutation_rate is None or 0 <= self.mutation_rate <= 1,
                "mutation_rate must be in [0, 1] or None",
            ),
            (self.exhaustive_limit >= 0, "exhaustive_limit must be non-negative"),
            (
                self.batch_control in ("regulation", "joint"),
                "batch_control must be 'regulation' or 'joint'",
            ),
            (0 <= self.joint_slack < math.inf, "joint_slack must be finite and >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
