"""HatInferenceService's rows (HAT): the devices' latencies and drafts, what crosses the
network, and the cloud replicas' load (the autoscaling signal)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeloom_operators.dashboards import panels
from edgeloom_operators.dashboards.panels import LEGEND, KindDashboard, Scope, Section, by, query

WINDOW = "[5m]"


def sections(scope: Scope) -> Sequence[Section]:
    """Latency, speculation and load."""

    def device(metric: str, **labels: str) -> str:
        return scope.metric(metric, "device", **labels)

    def cloud(metric: str) -> str:
        return scope.metric(metric, "cloud")

    def rate(metric: str, role: str = "device") -> str:
        return f"sum {by()} (rate({scope.metric(metric, role)}{WINDOW}))"

    def quantile(metric: str, q: float) -> panels.Target:
        buckets = f"sum {by('le')} (rate({device(metric + '_bucket')}{WINDOW}))"
        return query(f"histogram_quantile({q}, {buckets})", f"{LEGEND} p{round(q * 100)}")

    acceptance = (
        f"{rate('edgeloom_accepted_tokens_total')} / {rate('edgeloom_drafted_tokens_total')}"
    )
    per_token = (
        f"sum {by()} (rate({device('edgeloom_hidden_bytes_total')}{WINDOW})) / "
        f"{rate('edgeloom_generated_tokens_total')}"
    )
    requests = query(
        f"sum {by('outcome')} (rate({device('edgeloom_requests_total')}{WINDOW}))",
        f"{LEGEND} {{{{outcome}}}}",
    )
    queue = query(f"sum {by()} ({cloud('edgeloom_queue_length')})", LEGEND)
    replicas = query(f"count {by()} ({cloud('edgeloom_sessions')})", LEGEND)
    return (
        Section(
            "Latency",
            (
                panels.series(
                    "Time to first token",
                    "s",
                    quantile("edgeloom_ttft_seconds", 0.5),
                    quantile("edgeloom_ttft_seconds", 0.95),
                ),
                panels.series(
                    "Time between tokens",
                    "s",
                    quantile("edgeloom_tbt_seconds", 0.5),
                    quantile("edgeloom_tbt_seconds", 0.95),
                ),
            ),
        ),
        Section(
            "Speculation",
            (
                panels.single(
                    "Acceptance rate",
                    "percentunit",
                    query(acceptance, LEGEND),
                    width=8,
                    thresholds=panels.steps((None, "orange"), (0.5, "green")),
                    description="Draft tokens the cloud confirmed; orange below a half.",
                ),
                panels.single(
                    "Draft length",
                    "none",
                    query(f"max {by()} ({device('edgeloom_draft_length')})", LEGEND),
                    width=8,
                ),
                panels.single(
                    "Hidden-state bytes per token",
                    "bytes",
                    query(per_token, LEGEND),
                    width=8,
                    description="Uplink and downlink together, per token answered.",
                ),
                panels.series(
                    "Tokens per second",
                    "short",
                    query(rate("edgeloom_generated_tokens_total"), LEGEND),
                ),
                panels.series("Requests", "reqps", requests),
            ),
        ),
        Section(
            "Cloud load",
            (
                panels.series("Queue length", "none", queue, width=8),
                panels.series(
                    "Sessions",
                    "none",
                    query(f"sum {by()} ({cloud('edgeloom_sessions')})", LEGEND),
                    width=8,
                ),
                panels.series("Cloud replicas scraped", "none", replicas, width=8),
                panels.series(
                    "Middle compute per position",
                    "s",
                    query(
                        f"{rate('edgeloom_middle_compute_seconds_total', 'cloud')} / "
                        f"{rate('edgeloom_middle_positions_total', 'cloud')}",
                        LEGEND,
                    ),
                    width=24,
                ),
            ),
        ),
    )


DASHBOARD = KindDashboard(
    sections,
    "HAT device-cloud speculative inference: the services and their phase, time to first "
    "token and between tokens, acceptance, bytes per token, and the cloud replicas' load.",
)
