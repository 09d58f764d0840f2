"""Worker selection: choose K workers whose merged label mix is closest to the target.

Score, then select: :func:`score_selection` evaluates one candidate set (batch sizes from
:func:`~edgeloom.algos.mergesfl.regulation.regulate_batch_sizes` or, with ``batch_control:
joint``, :func:`~edgeloom.algos.mergesfl.joint.joint_batch_sizes` over that set, the divergence
of the merged label distribution from the target, and a time-budget penalty);
:func:`exhaustive_select` and :func:`genetic_select` search for the set with the lowest
objective; :func:`select_workers` picks the solver.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgeloom.algos.mergesfl.config import MergeSFLConfig
from edgeloom.algos.mergesfl.joint import joint_batch_sizes
from edgeloom.algos.mergesfl.labels import (
    kl_divergence,
    merged_label_distribution,
    normalise,
    normalise_rows,
)
from edgeloom.algos.mergesfl.regulation import (
    per_sample_times,
    predicted_iteration_times,
    regulate_batch_sizes,
)


@dataclasses.dataclass(frozen=True)
class WorkerSelection:
    """One candidate set of workers and how it scores.

    Attributes
    ----------
    workers : tuple of int
        Selected worker indices, ascending.
    batch_sizes : tuple of int
        ``b_i`` (regulated or joint, ``config.batch_control``), aligned with ``workers``.
    divergence : float
        ``KL(P_m ‖ target)``.
    iteration_time_s : float
        Predicted iteration time, ``max_i b_i (μ_i + 2s/β_i)``.
    objective : float
        ``divergence + penalty_weight * max(0, iteration_time_s / time_budget_s - 1)``; lower
        is better.
    """

    workers: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    divergence: float
    iteration_time_s: float
    objective: float


@dataclasses.dataclass(frozen=True, eq=False)
class SelectionProblem:
    """Validated inputs of worker selection; build it with :meth:`create`.

    Attributes
    ----------
    label_dists : np.ndarray
        ``(N, C)`` label distribution of every candidate worker (rows sum to 1).
    per_sample_compute_s, per_sample_transfer_s : np.ndarray
        ``(N,)`` measured ``μ_i`` and ``2s/β_i``.
    num_selected : int
        ``K``.
    target : np.ndarray
        ``(C,)`` target distribution ``U``.
    time_budget_s : float
        Per-iteration time budget (``inf`` for none).
    config : MergeSFLConfig
        Batch bounds, penalty and solver settings.
    """

    label_dists: np.ndarray
    per_sample_compute_s: np.ndarray
    per_sample_transfer_s: np.ndarray
    num_selected: int
    target: np.ndarray
    time_budget_s: float
    config: MergeSFLConfig

    @classmethod
    def create(
        cls,
        label_dists: npt.ArrayLike,
        per_sample_compute_s: Sequence[float],
        per_sample_transfer_s: Sequence[float],
        num_selected: int,
        config: MergeSFLConfig,
        target: npt.ArrayLike | None = None,
        time_budget_s: float | None = None,
    ) -> SelectionProblem:
        """Validate and normalise the inputs.

        ``target`` defaults to the uniform distribution. ``time_budget_s`` defaults to
        ``(1 + config.time_slack)`` times the iteration time of the ``K`` workers with the
        smallest per-sample time, which is (up to batch bounds and rounding) the fastest
        possible set.
        """
        dists = normalise_rows(label_dists)
        per_sample = per_sample_times(per_sample_compute_s, per_sample_transfer_s)
        if len(per_sample) != len(dists):
            raise ValueError(f"{len(dists)} label distributions but {len(per_sample)} timings")
        if not 1 <= num_selected <= len(dists):
            raise ValueError(f"num_selected must be in [1, {len(dists)}], got {num_selected}")
        goal = np.full(dists.shape[1], 1.0 / dists.shape[1]) if target is None else target
        goal = normalise(goal, "target")
        if goal.shape != (dists.shape[1],):
            raise ValueError(f"target must have {dists.shape[1]} classes, got {goal.shape}")
        problem = cls(
            label_dists=dists,
            per_sample_compute_s=np.asarray(per_sample_compute_s, dtype=np.float64),
            per_sample_transfer_s=np.asarray(per_sample_transfer_s, dtype=np.float64),
            num_selected=num_selected,
            target=goal,
            time_budget_s=math.inf,
            config=config,
        )
        if time_budget_s is None:
            fastest_time_s = score_selection(problem, problem.fastest_workers()).iteration_time_s
            time_budget_s = (1 + config.time_slack) * fastest_time_s
        if not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive, got {time_budget_s}")
        return dataclasses.replace(problem, time_budget_s=float(time_budget_s))

    @property
    def num_workers(self) -> int:
        return len(self.label_dists)

    def fastest_workers(self) -> np.ndarray:
        """The ``K`` workers with the smallest per-sample time (ties to the lower index)."""
        per_sample = self.per_sample_compute_s + self.per_sample_transfer_s
        return np.sort(np.argsort(per_sample, kind="stable")[: self.num_selected])


def score_selection(problem: SelectionProblem, workers: npt.ArrayLike) -> WorkerSelection:
    """Size the batches of ``workers`` (``config.batch_control``) and score the merged label mix.

    Parameters
    ----------
    problem : SelectionProblem
        Candidates, timings, target and settings.
    workers : array_like of int
        Distinct candidate indices (any order, any count).

    Returns
    -------
    WorkerSelection
    """
    chosen = np.unique(np.asarray(workers, dtype=np.int64))
    cfg = problem.config
    compute = problem.per_sample_compute_s[chosen]
    transfer = problem.per_sample_transfer_s[chosen]
    bounds = (cfg.total_batch_size, cfg.min_batch_size, cfg.max_batch_size)
    if cfg.batch_control == "joint":
        labels, target = problem.label_dists[chosen], problem.target
        joint = joint_batch_sizes(labels, compute, transfer, target, *bounds, cfg.joint_slack)
        sizes = list(joint.batch_sizes)
    else:
        sizes = regulate_batch_sizes(compute, transfer, *bounds)
    divergence = kl_divergence(
        merged_label_distribution(sizes, problem.label_dists[chosen]), problem.target
    )
    time_s = float(predicted_iteration_times(sizes, compute, transfer).max())
    overrun = max(0.0, time_s / problem.time_budget_s - 1.0)
    return WorkerSelection(
        workers=tuple(int(w) for w in chosen),
        batch_sizes=tuple(sizes),
        divergence=divergence,
        iteration_time_s=time_s,
        objective=divergence + cfg.penalty_weight * overrun,
    )


def exhaustive_select(problem: SelectionProblem) -> WorkerSelection:
    """The best of all ``C(N, K)`` sets (ties go to the lexicographically smallest set)."""
    return min(
        (
            score_selection(problem, combo)
            for combo in itertools.combinations(range(problem.num_workers), problem.num_selected)
        ),
        key=_rank,
    )


def genetic_select(problem: SelectionProblem, rng: np.random.Generator) -> WorkerSelection:
    """Search for the best set with a genetic algorithm over binary chromosomes.

    A chromosome is an ``N``-bit mask with exactly ``K`` ones. The first population holds the
    fastest-``K`` set and random sets. Each generation keeps ``elite_count`` best chromosomes and
    breeds the rest: two parents by tournament selection, one-point crossover (with probability
    ``crossover_rate``), bit-flip mutation, then repair to exactly ``K`` ones by switching random
    surplus bits off or random missing bits on. Objective values are memoised per set.

    Parameters
    ----------
    problem : SelectionProblem
        Candidates, timings, target and GA settings.
    rng : np.random.Generator
        Source of randomness; the result is a deterministic function of its state.

    Returns
    -------
    WorkerSelection
        The best set evaluated in the whole run.
    """
    cfg = problem.config
    n, k = problem.num_workers, problem.num_selected
    mutation = cfg.mutation_rate if cfg.mutation_rate is not None else 1.0 / n
    scores: dict[tuple[int, ...], WorkerSelection] = {}

    def score(mask: np.ndarray) -> WorkerSelection:
        key = tuple(int(i) for i in np.flatnonzero(mask))
        if key not in scores:
            scores[key] = score_selection(problem, key)
        return scores[key]

    def repair(mask: np.ndarray) -> np.ndarray:
        ones, zeros = np.flatnonzero(mask), np.flatnonzero(~mask)
        if len(ones) > k:
            mask[rng.choice(ones, len(ones) - k, replace=False)] = False
        elif len(ones) < k:
            mask[rng.choice(zeros, k - len(ones), replace=False)] = True
        return mask

    def tournament(population: list[np.ndarray]) -> np.ndarray:
        entrants = rng.choice(len(population), cfg.tournament_size, replace=False)
        return min((population[i] for i in entrants), key=lambda m: _rank(score(m)))

    fastest = np.zeros(n, dtype=bool)
    fastest[problem.fastest_workers()] = True
    population = [fastest] + [
        repair(np.zeros(n, dtype=bool)) for _ in range(cfg.population_size - 1)
    ]
    for _ in range(cfg.generations):
        ranked = sorted(population, key=lambda m: _rank(score(m)))
        offspring = ranked[: cfg.elite_count]
        while len(offspring) < cfg.population_size:
            first, second = tournament(population), tournament(population)
            if n > 1 and rng.random() < cfg.crossover_rate:
                cut = int(rng.integers(1, n))
                child = np.concatenate([first[:cut], second[cut:]])
            else:
                child = first.copy()
            child ^= rng.random(n) < mutation
            offspring.append(repair(child))
        population = offspring
    for mask in population:
        score(mask)
    return min(scores.values(), key=_rank)


def select_workers(
    label_dists: npt.ArrayLike,
    per_sample_compute_s: Sequence[float],
    per_sample_transfer_s: Sequence[float],
    num_selected: int,
    config: MergeSFLConfig,
    rng: np.random.Generator,
    target: npt.ArrayLike | None = None,
    time_budget_s: float | None = None,
) -> WorkerSelection:
    """Choose ``K`` workers and their batch sizes for the next round.

    Minimises ``KL(P_m ‖ U)`` (``P_m`` weighted by the regulated batch sizes of the chosen
    set) plus a penalty when the predicted iteration time exceeds the budget. Uses
    :func:`exhaustive_select` when ``C(N, K) <= config.exhaustive_limit`` and
    :func:`genetic_select` otherwise. Arguments are those of :meth:`SelectionProblem.create`,
    plus ``rng`` for the genetic algorithm.

    Returns
    -------
    WorkerSelection
        Workers (indices into the inputs) with their batch sizes and scores.
    """
    problem = SelectionProblem.create(
        label_dists,
        per_sample_compute_s,
        per_sample_transfer_s,
        num_selected,
        config,
        target=target,
        time_budget_s=time_budget_s,
    )
    if math.comb(problem.num_workers, num_selected) <= config.exhaustive_limit:
        return exhaustive_select(problem)
    return genetic_select(problem, rng)


def _rank(selection: WorkerSelection) -> tuple[float, tuple[int, ...]]:
    return selection.objective, selection.workers
