"""The operator's dashboard: every kind's resources with their phase (each table links to that
kind's dashboard), reconciles, status reports, the worker-health loop and the operator's own
scrape health, in the operator's namespace (``$operator_namespace``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeloom_operators.dashboards.board import (
    OPERATOR_UID,
    dashboard,
    encode,
    layout,
    link,
    uid_of,
    variable,
)
from edgeloom_operators.dashboards.panels import (
    NONE_IS_GOOD,
    RESOURCE_PHASE,
    UP,
    Section,
    bars,
    phase_changes,
    query,
    resource_table,
    series,
    single,
)

if TYPE_CHECKING:
    from edgeloom_operators.plugin import KindPlugin

OPERATOR = 'namespace="$operator_namespace"'


def _rate(metric: str, interval: str = "$__rate_interval") -> str:
    return f"sum by (kind, outcome) (rate({metric}{{{OPERATOR}}}[{interval}]))"


def _to_kind_dashboard(kind: str) -> tuple[str, str]:
    """The data link of a resource's name cell: its kind's dashboard on that resource."""
    fields = "${__data.fields"
    return (
        f"{kind} dashboard",
        f"/d/{uid_of(kind)}?var-namespace={fields}.resource_namespace}}"
        f"&var-resource={fields}.name}}&var-run={fields}.uid}}&${{__url_time_range}}",
    )


def resources_section(kinds: Sequence[str]) -> Section:
    """Failed resources, counts per phase, and one table per kind."""
    phase = f"{RESOURCE_PHASE}{{{OPERATOR}"
    per_phase = f"sum by (kind, phase) (edgeloom_operator_resources{{{OPERATOR}}})"
    tables = tuple(
        resource_table(f"{kind}s", f'{phase}, kind="{kind}"}} == 1', _to_kind_dashboard(kind))
        for kind in kinds
    )
    return Section(
        "Resources",
        (
            single(
                "Failed resources",
                "none",
                query(f'sum({phase}, phase="Failed"}}) or vector(0)', "failed"),
                thresholds=NONE_IS_GOOD,
                width=6,
                height=8,
            ),
            series("Resources per phase", "none", query(per_phase, "{{kind}} {{phase}}"), width=9),
            bars(
                "Resources per phase (now)", "none", query(per_phase, "{{kind}} {{phase}}"), width=9
            ),
            *tables,
        ),
    )


def reconcile_section() -> Section:
    def duration(q: float) -> str:
        bucket = f"edgeloom_operator_reconcile_duration_seconds_bucket{{{OPERATOR}}}"
        return f"histogram_quantile({q}, sum by (le, kind) (rate({bucket}[$__rate_interval])))"

    return Section(
        "Reconciles",
        (
            series(
                "Reconciles",
                "ops",
                query(_rate("edgeloom_operator_reconciles_total"), "{{kind}} {{outcome}}"),
            ),
            series(
                "Reconcile duration",
                "s",
                query(duration(0.5), "{{kind}} p50"),
                query(duration(0.99), "{{kind}} p99"),
            ),
        ),
    )


def loops_section() -> Section:
    actions = (
        "sum by (kind, outcome) (increase("
        f"edgeloom_operator_worker_actions_total{{{OPERATOR}}}[$__rate_interval]))"
    )
    return Section(
        "Status reports and worker health",
        (
            series(
                "Status reports",
                "ops",
                query(_rate("edgeloom_operator_status_reports_total"), "{{kind}} {{outcome}}"),
            ),
            series(
                "Health checks",
                "ops",
                query(_rate("edgeloom_operator_health_checks_total"), "{{kind}} {{outcome}}"),
            ),
            series("Worker actions", "none", query(actions, "{{kind}} {{outcome}}"), width=24),
        ),
    )


def operator_board(plugins: Sequence[KindPlugin]) -> dict[str, Any]:
    """The operator's dashboard, with a table of and a link to every kind's dashboard."""
    kinds = [p.info.kind for p in plugins]
    board = dashboard(
        OPERATOR_UID,
        "edgeloom / Operator",
        "The kopf operator: resources and their phase, reconciles, status reports, health "
        "checks and worker actions.",
    ).with_variable(
        variable(
            "operator_namespace",
            "Operator namespace",
            "label_values(edgeloom_operator_resources, namespace)",
            include_all=False,
        )
    )
    board = board.annotation(phase_changes(f"{RESOURCE_PHASE}{{{OPERATOR}}}"))
    for kind in kinds:
        board = board.link(link(kind, uid_of(kind)))
    up = f'up{{{OPERATOR}, app_kubernetes_io_component="operator"}}'
    sections = [
        resources_section(kinds),
        reconcile_section(),
        loops_section(),
        Section(
            "Operator",
            (series("Operator up", "none", query(up, "{{pod}}"), width=24, thresholds=UP),),
        ),
    ]
    return encode(layout(board, sections))
