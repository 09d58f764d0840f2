"""Worker selection: KL of the batch-weighted label mix, time budget, GA versus exhaustive."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from edgeloom.algos.mergesfl import (
    MergeSFLConfig,
    SelectionProblem,
    exhaustive_select,
    genetic_select,
    kl_divergence,
    merged_label_distribution,
    regulate_batch_sizes,
    score_selection,
    select_workers,
)

CONFIG = MergeSFLConfig(total_batch_size=120, min_batch_size=2, max_batch_size=60)


def _instance(seed: int, n: int, k: int, **config: float) -> SelectionProblem:
    rng = np.random.default_rng(seed)
    return SelectionProblem.create(
        label_dists=rng.dirichlet(np.full(6, 0.3), size=n),
        per_sample_compute_s=rng.uniform(0.001, 0.01, size=n),
        per_sample_transfer_s=rng.uniform(0.0, 0.004, size=n),
        num_selected=k,
        config=dataclasses.replace(CONFIG, **config),
    )


def test_kl_divergence_values() -> None:
    assert kl_divergence([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert kl_divergence([2, 6], [1, 1]) == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    )
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    with pytest.raises(ValueError, match="differ in shape"):
        kl_divergence([1, 1], [1, 1, 1])


def test_merged_label_distribution_weights_by_batch_size() -> None:
    np.testing.assert_allclose(merged_label_distribution([1, 3], [[1, 0], [0, 1]]), [0.25, 0.75])
    np.testing.assert_allclose(
        merged_label_distribution([2, 2], [[10, 30], [5, 0]]), [0.625, 0.375]
    )


def test_score_uses_batch_sizes_regulated_over_the_chosen_set() -> None:
    problem = _instance(0, 8, 3, time_slack=math.inf)
    chosen = [6, 1, 4]
    scored = score_selection(problem, chosen)
    sizes = regulate_batch_sizes(
        problem.per_sample_compute_s[[1, 4, 6]],
        problem.per_sample_transfer_s[[1, 4, 6]],
        120,
        2,
        60,
    )
    assert scored.workers == (1, 4, 6) and list(scored.batch_sizes) == sizes
    expected = kl_divergence(
        merged_label_distribution(sizes, problem.label_dists[[1, 4, 6]]), np.ones(6)
    )
    assert scored.divergence == pytest.approx(expected) and scored.objective == scored.divergence


def test_budget_overrun_is_penalised_and_default_budget_follows_the_fastest_set() -> None:
    problem = _instance(1, 8, 3, time_slack=0.25, penalty_weight=7.0)
    fastest = score_selection(problem, problem.fastest_workers())
    assert problem.time_budget_s == pytest.approx(1.25 * fastest.iteration_time_s)
    slowest = score_selection(problem, np.argsort(problem.per_sample_compute_s)[-3:])
    overrun = slowest.iteration_time_s / problem.time_budget_s - 1
    assert overrun > 0
    assert slowest.objective == pytest.approx(slowest.divergence + 7.0 * overrun)


@pytest.mark.parametrize(("n", "k"), [(6, 3), (8, 4), (10, 3), (10, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_genetic_algorithm_finds_the_exhaustive_optimum(n: int, k: int, seed: int) -> None:
    problem = _instance(seed, n, k)
    best = exhaustive_select(problem)
    found = genetic_select(problem, np.random.default_rng(seed))
    assert found.objective == pytest.approx(best.objective, abs=1e-12)
    objectives = [
        score_selection(problem, c).objective for c in itertools.combinations(range(n), k)
    ]
    assert best.objective == min(objectives) < np.median(objectives)


def test_time_budget_trades_label_balance_for_speed() -> None:
    # classes: worker 0 and 1 hold class 0, worker 2 (slow) class 1, worker 3 half and half.
    dists = [[1, 0], [1, 0], [0, 1], [1, 1]]
    compute = [0.001, 0.001, 0.003, 0.001]
    rng = np.random.default_rng(0)
    free = select_workers(
        dists, compute, [0.0] * 4, 2, MergeSFLConfig(100, 1, 100, time_slack=math.inf), rng
    )
    tight = select_workers(
        dists, compute, [0.0] * 4, 2, MergeSFLConfig(100, 1, 100, time_slack=0.0), rng
    )
    assert free.workers == (2, 3) and free.batch_sizes == (25, 75)
    assert 2 not in tight.workers and tight.divergence > free.divergence
    assert tight.iteration_time_s < free.iteration_time_s


def test_select_workers_switches_solver_at_the_exhaustive_limit() -> None:
    problem = _instance(3, 9, 4)
    args = (problem.label_dists, problem.per_sample_compute_s, problem.per_sample_transfer_s, 4)
    exact = select_workers(*args, problem.config, np.random.default_rng(5))
    assert exact == exhaustive_select(problem)
    ga_config = dataclasses.replace(
        problem.config, exhaustive_limit=0, generations=1, population_size=4
    )
    ga = select_workers(*args, ga_config, np.random.default_rng(5))
    ga_problem = SelectionProblem.create(*args, ga_config)
    assert ga == genetic_select(ga_problem, np.random.default_rng(5))


def test_genetic_algorithm_on_a_large_instance_beats_random_sets() -> None:
    problem = _instance(4, 40, 10)
    found = genetic_select(problem, np.random.default_rng(0))
    assert len(set(found.workers)) == 10 and sum(found.batch_sizes) == 120
    rng = np.random.default_rng(1)
    random_best = min(
        score_selection(problem, rng.choice(40, 10, replace=False)).objective for _ in range(200)
    )
    assert found.objective < random_best
    assert found == genetic_select(problem, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_selected": 5}, "num_selected"),
        ({"per_sample_compute_s": [0.1] * 3, "per_sample_transfer_s": [0.0] * 3}, "3 timings"),
        ({"target": [1, 1, 1]}, "target"),
        ({"label_dists": [[0, 0]] * 4}, "positive total"),
        ({"time_budget_s": 0.0}, "time_budget_s"),
    ],
)
def test_invalid_problems(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "label_dists": [[1, 0], [0, 1], [1, 1], [2, 1]],
        "per_sample_compute_s": [0.1] * 4,
        "per_sample_transfer_s": [0.0] * 4,
        "num_selected": 2,
        "config": CONFIG,
    }
    with pytest.raises(ValueError, match=message):
        SelectionProblem.create(**{**args, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_batch_size": 0},
        {"min_batch_size": 5, "max_batch_size": 4},
        {"time_slack": -0.1},
        {"penalty_weight": math.inf},
        {"tournament_size": 40},
        {"elite_count": 32},
        {"crossover_rate": 1.5},
        {"mutation_rate": -0.1},
        {"population_size": 1},
    ],
)
def test_config_rejects_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MergeSFLConfig(**kwargs)  # type: ignore[arg-type]
