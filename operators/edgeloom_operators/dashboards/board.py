"""The shared skeleton of every kind's dashboard, and what every edgeloom dashboard has.

A kind's dashboard (:func:`kind_board`) is, in rows: its resources with their phase (the
operator's per-resource series), a job's progress (the ``steps_completed``/``steps_planned``
pair every coordinating role exports), the kind's own sections (its plugin's ``dashboard()``),
and the scrape health of its pods. Its variables are ``$namespace``, ``$resource`` (named after
the kind) and ``$run`` (the resource's uid), each with "All"; phase changes are annotations,
and links lead to the operator's dashboard and every other edgeloom dashboard.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from edgeloom_operators.dashboards.panels import (
    DATASOURCE,
    LEGEND,
    RESOURCE_PHASE,
    UP,
    Scope,
    Section,
    bars,
    by,
    phase_changes,
    query,
    resource_table,
    series,
    single,
    steps,
)
from edgeloom_operators.status import JOB

if TYPE_CHECKING:
    from edgeloom_operators.plugin import KindPlugin

TAG = "edgeloom"
OPERATOR_UID = "edgeloom-operator"


def uid_of(kind: str) -> str:
    """A kind's dashboard uid (alerts link to ``/d/<uid>``)."""
    return f"edgeloom-{kind.lower()}"


def dashboard(uid: str, title: str, description: str) -> builders.Dashboard:
    """What every edgeloom dashboard has: uid, title, tag, time, refresh, shared crosshair,
    the data-source variable and a drop-down of every edgeloom dashboard."""
    return (
        builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .link(
            builders.DashboardLink("edgeloom")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .keep_time(True)
        )
    )


def variable(name: str, label: str, definition: str, include_all: bool = True) -> Any:
    """A Prometheus ``label_values`` variable, refreshed with the time range; "All" is ``.*``."""
    out = (
        builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(definition)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    if include_all:
        out = out.include_all(True).all_value(".*").multi(True)
    return out


def link(title: str, uid: str) -> builders.DashboardLink:
    """A link to dashboard ``uid`` that keeps the time range."""
    return (
        builders.DashboardLink(title)
        .type(model.DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .keep_time(True)
    )


def layout(board: builders.Dashboard, sections: Sequence[Section]) -> builders.Dashboard:
    """Each section as an open row with its panels; panel ids numbered in order."""
    next_id = 1
    for section in sections:
        board = board.with_row(builders.Row(section.title).id(next_id))
        next_id += 1
        for panel in section.panels:
            board = board.with_panel(panel.id(next_id))  # type: ignore[attr-defined]
            next_id += 1
    return board


def encode(board: builders.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    out: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return out


def resources_section(scope: Scope) -> Section:
    """The selected resources with their phase, and their counts per phase over time."""
    per_phase = f"sum by (phase) ({scope.resources()})"
    return Section(
        "Resources",
        (
            resource_table(f"{scope.kind}s", f"{scope.resources()} == 1", width=16),
            bars(
                f"{scope.kind}s per phase (now)",
                "none",
                query(per_phase, "{{phase}}"),
                width=8,
            ),
            series(
                f"{scope.kind}s per phase",
                "none",
                query(per_phase, "{{phase}}"),
                width=24,
                height=6,
            ),
        ),
    )


def progress_section(scope: Scope, coordinator: str, step: str) -> Section:
    """A job's completed and planned steps, and the ratio of the two."""
    done = f"max {by()} ({scope.metric('edgeloom_steps_completed', coordinator)})"
    planned = f"max {by()} ({scope.metric('edgeloom_steps_planned', coordinator)})"
    return Section(
        "Progress",
        (
            single(f"{step.capitalize()} completed", "none", query(done, LEGEND), width=8),
            single(f"{step.capitalize()} planned", "none", query(planned, LEGEND), width=8),
            bars(
                "Progress",
                "percentunit",
                query(f"{done} / {planned}", LEGEND),
                width=8,
                height=4,
                thresholds=steps((None, "blue"), (1, "green")),
                max_value=1,
            ),
            series(f"{step.capitalize()} completed", "none", query(done, LEGEND), width=24),
        ),
    )


def scrape_section(scope: Scope) -> Section:
    """Whether Prometheus reaches each of the selected resources' pods."""
    return Section(
        "Scrape health",
        (
            series(
                "Targets up",
                "none",
                query(scope.targets(), "{{pod}}"),
                width=24,
                thresholds=UP,
                description="1: scraped; 0: the pod's metrics (and the operator's health "
                "checks on them) are stale.",
            ),
        ),
    )


def kind_board(plugin: KindPlugin) -> dict[str, Any]:
    """The dashboard of ``plugin``'s kind: the shared skeleton around the sections of its
    ``dashboard()`` hook."""
    info, extra = plugin.info, plugin.dashboard()
    scope = Scope(info.kind)
    where = f'kind="{info.kind}"'
    board = (
        dashboard(
            uid_of(info.kind), f"edgeloom / {info.kind}", extra.description or info.description
        )
        .with_variable(
            variable(
                "namespace",
                "Namespace",
                f"label_values({RESOURCE_PHASE}{{{where}}}, resource_namespace)",
            )
        )
        .with_variable(
            variable(
                "resource",
                info.kind,
                f'label_values({RESOURCE_PHASE}{{{where}, resource_namespace=~"$namespace"}}, '
                "name)",
            )
        )
        .with_variable(
            variable(
                "run",
                "Run (uid)",
                f'label_values({RESOURCE_PHASE}{{{where}, resource_namespace=~"$namespace", '
                'name=~"$resource"}, uid)',
            )
        )
        .annotation(phase_changes(scope.resources()))
        .link(link("Operator", OPERATOR_UID))
    )
    sections = [resources_section(scope)]
    if plugin.semantics == JOB:
        sections.append(progress_section(scope, info.roles[0].name, extra.step))
    sections += [*extra.sections(scope), scrape_section(scope)]
    return encode(layout(board, sections))
