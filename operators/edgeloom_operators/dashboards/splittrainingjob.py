"""SplitTrainingJob's rows (MergeSFL): the server's rounds and accuracy, the per-worker
regulation the server measures, and the worker pods' own side."""

from __future__ import annotations

from collections.abc import Sequence

from edgeloom_operators.dashboards import panels
from edgeloom_operators.dashboards.panels import LEGEND, KindDashboard, Scope, Section, by, query

WORKER_LEGEND = "{{name}} worker {{worker}}"
PER_WORKER = (
    ("Worker compute time", "s", "edgeloom_worker_compute_seconds"),
    ("Worker transfer time", "s", "edgeloom_worker_transfer_seconds"),
    ("Batch size per worker", "none", "edgeloom_batch_size"),
)
"""The server's per-worker gauges: (title, unit, metric)."""


def sections(scope: Scope) -> Sequence[Section]:
    """Training, the workers as the server measures them, and the worker pods."""

    def server(metric: str) -> str:
        return scope.metric(metric, "server")

    def per_worker(metric: str) -> panels.Target:
        return query(f"max {by('worker')} ({server(metric)})", WORKER_LEGEND)

    def per_resource(metric: str) -> panels.Target:
        return query(f"max {by()} ({server(metric)})", LEGEND)

    def duration(q: float) -> str:
        rounds = server("edgeloom_round_duration_seconds_bucket")
        return f"histogram_quantile({q}, sum {by('le')} (rate({rounds}[$__rate_interval])))"

    def worker_pods(expr: str) -> panels.Target:
        return query(expr, "{{pod}}")

    mean = (
        f"sum {by()} ({server('edgeloom_round_duration_seconds_sum')}) / "
        f"sum {by()} ({server('edgeloom_round_duration_seconds_count')})"
    )
    dropped = f"increase({server('edgeloom_workers_dropped_total')}[$__rate_interval])"
    moved = f"rate({server('edgeloom_bytes_total')}[$__rate_interval])"
    compute = f"rate({scope.metric('edgeloom_compute_seconds_bucket', 'worker')}[$__rate_interval])"
    tensors = f"rate({scope.metric('edgeloom_tensor_bytes_total', 'worker')}[$__rate_interval])"
    accuracy = per_resource("edgeloom_accuracy_ratio")
    good = panels.steps((None, "red"), (0.5, "yellow"), (0.8, "green"))
    return (
        Section(
            "Training",
            (
                panels.single("Accuracy", "percentunit", accuracy, height=8, thresholds=good),
                panels.series("Accuracy", "percentunit", accuracy, width=9),
                panels.series("Loss", "none", per_resource("edgeloom_loss"), width=9),
                panels.series(
                    "Round duration",
                    "s",
                    query(duration(0.5), f"{LEGEND} p50"),
                    query(duration(0.9), f"{LEGEND} p90"),
                    query(mean, f"{LEGEND} mean (run)"),
                ),
                panels.series("Participants", "none", per_resource("edgeloom_participants")),
            ),
        ),
        Section(
            "Workers, as the server measures them",
            (
                *(panels.series(title, unit, per_worker(m)) for title, unit, m in PER_WORKER),
                panels.bars(
                    "Batch size per worker (now)", "none", per_worker("edgeloom_batch_size")
                ),
                panels.series(
                    "Dropped workers",
                    "none",
                    query(f"sum {by()} ({dropped})", LEGEND),
                    thresholds=panels.NONE_IS_GOOD,
                ),
                panels.series(
                    "Bytes moved by the server", "Bps", query(f"sum {by()} ({moved})", LEGEND)
                ),
            ),
        ),
        Section(
            "Worker pods",
            (
                panels.series(
                    "Worker compute time per command (p90)",
                    "s",
                    worker_pods(
                        f"histogram_quantile(0.9, sum by (le, namespace, pod) ({compute}))"
                    ),
                ),
                panels.series(
                    "Worker tensor traffic",
                    "Bps",
                    worker_pods(f"sum by (namespace, pod) ({tensors})"),
                ),
            ),
        ),
    )


DASHBOARD = KindDashboard(
    sections,
    "MergeSFL split federated learning: the jobs and their phase, rounds and accuracy, the "
    "per-worker regulation and the workers' side.",
    step="rounds",
)
