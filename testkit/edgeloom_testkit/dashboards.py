"""The chart's Grafana dashboards and alert rules, as PromQL a test can run against Prometheus.

The expressions expect the target labels the chart's scrape set-ups give: ``namespace``,
``pod`` and the pod's ``app.kubernetes.io/*`` labels as ``app_kubernetes_io_*`` (the PodMonitor's
``podTargetLabels``, or ``labelmap`` in an annotation-based ``kubernetes-pods`` job). A test's
own Prometheus gives them with ``static_configs`` labels.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgeloom_testkit.controlplane import KUBE_VERSION, REPO_ROOT, controlplane_bin_dir

CHART = REPO_ROOT / "charts" / "edgeloom"
DASHBOARDS = CHART / "dashboards"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class Query:
    """One panel target's expression, its dashboard variables substituted."""

    dashboard: str
    panel: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.expr}"


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard of the chart, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The dashboard's panels, those inside (collapsed) rows included; rows themselves not."""
    for panel in dashboard.get("panels", []):
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` in ``expr``; an unknown variable raises ``KeyError``."""
    return _VARIABLE.sub(lambda m: variables[m.group(1) or m.group(2)], expr)


def dashboard_queries(
    namespace: str,
    resource: str,
    operator_namespace: str | None = None,
    rate_interval: str = "1m",
    run: str = ".*",
) -> list[Query]:
    """Every panel target and annotation of every dashboard, ready for Prometheus'
    ``query_range``.

    Parameters
    ----------
    namespace, resource, run
        The kind dashboards' ``$namespace``, ``$resource`` (the resource's name) and ``$run``
        (its uid; ``.*`` is Grafana's "All").
    operator_namespace
        The operator dashboard's ``$operator_namespace``; default ``namespace``.
    rate_interval
        Grafana's ``$__rate_interval``: at least four scrape intervals.
    """
    variables = {
        "namespace": namespace,
        "resource": resource,
        "run": run,
        "operator_namespace": operator_namespace or namespace,
        "__rate_interval": rate_interval,
    }
    queries = []
    for board in dashboards().values():
        for panel in panels(board):
            for target in panel["targets"]:
                queries.append(Query(board["title"], panel["title"], target["expr"]))
        for annotation in board["annotations"]["list"]:
            queries.append(Query(board["title"], annotation["name"], annotation["expr"]))
    return [Query(q.dashboard, q.panel, substitute(q.expr, variables)) for q in queries]


def render_chart(
    values: Mapping[str, Any] | None = None, sets: tuple[str, ...] = (), helm: Path | None = None
) -> list[dict[str, Any]]:
    """The chart's manifests from ``helm template``: ``values`` (JSON on stdin), then ``--set``s."""
    binary = helm or controlplane_bin_dir() / "helm"
    args = [str(binary), "template", "edgeloom", str(CHART), "--kube-version", KUBE_VERSION]
    args += ["--values", "-"]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(
        args,
        input=json.dumps(values or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed: {proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def alert_rules(
    values: Mapping[str, Any] | None = None, helm: Path | None = None
) -> dict[str, Any]:
    """The PrometheusRule's spec rendered with ``values``: the content of a Prometheus rule file.

    ``values`` are chart values, e.g. ``{"monitoring": {"prometheusRule": {"staleFor": "1m"}}}``
    for short thresholds; the PrometheusRule is enabled whatever they say.
    """
    docs = render_chart(values, ("monitoring.prometheusRule.enabled=true",), helm)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    spec: dict[str, Any] = rule["spec"]
    return spec


def alert_expressions(rules: Mapping[str, Any]) -> dict[str, str]:
    """Each alert's expression by alert name, from a rule-file dict."""
    return {
        rule["alert"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
