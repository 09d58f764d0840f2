"""The building blocks every edgeloom dashboard is made of (grafana-foundation-sdk builders).

Selectors follow the labels the series really carry: a job pod's metrics carry ``kind``,
``role`` and ``name`` (the resource) from the pod itself, and the scrape adds ``namespace``,
``pod`` and the pod's ``edgeloom.io/*`` labels as ``edgeloom_kind``, ``edgeloom_job``,
``edgeloom_role`` and ``edgeloom_run`` (the resource's uid: a namesake re-created later is
another run). The operator's per-resource series (``edgeloom_operator_resource_phase``) carry
the resource's ``kind``, ``resource_namespace``, ``name``, ``uid`` and ``phase``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RESOURCE_PHASE = "edgeloom_operator_resource_phase"
RESOURCE = ("namespace", "name", "edgeloom_run")
"""The labels that tell one run of one resource from another on a job pod's series."""
LEGEND = "{{namespace}}/{{name}}"
PHASE_COLORS = {
    "Pending": "yellow",
    "Running": "blue",
    "Succeeded": "green",
    "Failed": "red",
    "Degraded": "orange",
}

PanelBuilder = Builder[model.Panel]
Target = prom.Dataquery
"""One Prometheus query of a panel (:func:`query`)."""


@dataclass(frozen=True)
class Scope:
    """The selectors of one kind's dashboard, over its ``$namespace``, ``$resource`` and
    ``$run`` variables (each may be "All": a regex)."""

    kind: str

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def metric(self, name: str, role: str | None = None, **labels: str) -> str:
        """``name`` of the selected resources' pods (of ``role``), with extra ``labels``."""
        matchers = {
            "kind": f'"{self.kind}"',
            "namespace": '~"$namespace"',
            "name": '~"$resource"',
            "edgeloom_run": '~"$run"',
            **({"role": f'"{role}"'} if role else {}),
            **{k: f'"{v}"' for k, v in labels.items()},
        }
        return name + "{" + ", ".join(f"{k}={m}" for k, m in matchers.items()) + "}"

    def targets(self) -> str:
        """``up`` of the selected resources' pods, by the labels their targets carry."""
        return (
            f'up{{namespace=~"$namespace", edgeloom_kind="{self.singular}", '
            'edgeloom_job=~"$resource", edgeloom_run=~"$run"}'
        )

    def resources(self) -> str:
        """The operator's per-phase series of the selected resources."""
        return (
            f'{RESOURCE_PHASE}{{kind="{self.kind}", resource_namespace=~"$namespace", '
            'name=~"$resource", uid=~"$run"}'
        )


def by(*extra: str) -> str:
    """``by (...)`` over the labels of one run of one resource and ``extra``."""
    return f"by ({', '.join((*RESOURCE, *extra))})"


def query(expr: str, legend: str = "", instant: bool = False) -> prom.Dataquery:
    """One Prometheus target; ``instant`` ones come as a table."""
    target = prom.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    if instant:
        target = target.instant().format(PromQueryFormat.TABLE)
    return target


def steps(*pairs: tuple[float | None, str]) -> builders.ThresholdsConfig:
    """Absolute thresholds: ``(None, base colour), (value, colour from value on)...``."""
    return (
        builders.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in pairs])
    )


LAST = common_builders.ReduceDataOptions().calcs(["lastNotNull"])
"""Stats and bar gauges show each series' last value."""
UP = steps((None, "red"), (1, "green"))
"""Scrape health: 0 red, 1 green."""
NONE_IS_GOOD = steps((None, "green"), (1, "red"))
"""Counts of bad things: 0 green, from 1 red."""


BLUE = steps((None, "blue"))
"""No threshold: one colour."""


def _panel(
    panel: Any,
    title: str,
    unit: str,
    queries: Sequence[prom.Dataquery],
    size: tuple[int, int],
    description: str = "",
) -> PanelBuilder:
    """What every panel sets: title, description, data source, unit, ``size`` (width of 24,
    height) and its targets A, B, ..."""
    width, height = size
    panel = panel.title(title).description(description).datasource(DATASOURCE).unit(unit)
    panel = panel.span(width).height(height)
    for ref, target in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(target.ref_id(ref))
    out: PanelBuilder = panel
    return out


def series(
    title: str,
    unit: str,
    *queries: prom.Dataquery,
    width: int = 12,
    height: int = 8,
    thresholds: builders.ThresholdsConfig | None = None,
    description: str = "",
) -> PanelBuilder:
    """A time series panel; ``thresholds`` are drawn as lines."""
    panel = timeseries.Panel()
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        )
    return _panel(panel, title, unit, queries, (width, height), description)


def single(
    title: str,
    unit: str,
    *queries: prom.Dataquery,
    width: int = 6,
    height: int = 4,
    thresholds: builders.ThresholdsConfig = BLUE,
    description: str = "",
) -> PanelBuilder:
    """A stat panel of the last value, coloured by ``thresholds``."""
    panel = (
        stat.Panel()
        .thresholds(thresholds)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(LAST)
    )
    return _panel(panel, title, unit, queries, (width, height), description)


def bars(
    title: str,
    unit: str,
    *queries: prom.Dataquery,
    width: int = 12,
    height: int = 8,
    thresholds: builders.ThresholdsConfig = BLUE,
    max_value: float | None = None,
) -> PanelBuilder:
    """A bar gauge of the last values, from 0 (to ``max_value``)."""
    panel = bargauge.Panel().thresholds(thresholds).reduce_options(LAST).min(0)
    if max_value is not None:
        panel = panel.max(max_value)
    return _panel(panel, title, unit, queries, (width, height))


def resource_table(
    title: str, expr: str, link: tuple[str, str] | None = None, width: int = 24
) -> PanelBuilder:
    """The resources of ``expr`` (per-phase series ``== 1``) with their phase, coloured; the
    name cell links with ``link`` (title, URL; ``${__data.fields.<label>}`` are the row's)."""
    panel = (
        table.Panel()
        .with_transformation(
            model.DataTransformerConfig(
                id_val="filterFieldsByName",
                options={"include": {"names": ["resource_namespace", "name", "phase", "uid"]}},
            )
        )
        .override_by_name(
            "phase",
            [
                model.DynamicConfigValue("custom.cellOptions", {"type": "color-text"}),
                model.DynamicConfigValue("mappings", [_phase_mapping()]),
            ],
        )
        .sort_by([common_builders.TableSortByFieldState().display_name("phase")])
    )
    if link is not None:
        data_link = {"title": link[0], "url": link[1]}
        panel = panel.override_by_name("name", [model.DynamicConfigValue("links", [data_link])])
    return _panel(panel, title, "none", [query(expr, instant=True)], (width, 8))


def _phase_mapping() -> model.ValueMap:
    return model.ValueMap(
        options={
            phase: model.ValueMappingResult(color=color, index=i)
            for i, (phase, color) in enumerate(PHASE_COLORS.items())
        }
    )


def phase_changes(selector: str, name: str = "Phase changes") -> builders.AnnotationQuery:
    """An annotation where a resource of ``selector`` entered a phase (its series became 1)."""
    expr = f"({selector} == 1) unless ({selector} offset 1m == 1)"
    return (
        builders.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("orange")
        .expr(expr)
    )


@dataclass(frozen=True)
class Section:
    """A row of panels under a title."""

    title: str
    panels: tuple[PanelBuilder, ...]


def no_sections(scope: Scope) -> Sequence[Section]:
    """A kind with the shared skeleton alone."""
    return ()


@dataclass(frozen=True)
class KindDashboard:
    """What a kind adds to the shared skeleton of its dashboard
    (:func:`edgeloom_operators.dashboards.board.kind_board`).

    Attributes
    ----------
    sections
        The kind's own rows, from the selectors of its :class:`Scope`.
    description
        The dashboard's description; empty: the kind's registration's.
    step
        What one completed step is called on the progress row (rounds, blocks...).
    """

    sections: Callable[[Scope], Sequence[Section]] = field(default=no_sections)
    description: str = ""
    step: str = "steps"
