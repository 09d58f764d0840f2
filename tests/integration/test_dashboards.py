"""The chart's Grafana dashboards and alerts, checked with the real Prometheus tooling.

Dashboards: structure Grafana and its sidecar rely on, only metrics the code declares, and every
expression parsed by ``promtool check rules``. Alerts: rendered by the real ``helm``, checked by
``promtool check rules`` and unit-tested by ``promtool test rules`` (each fires when it should,
and not for a healthy job).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from edgeloom.api.status import Status
from edgeloom.apps.comp.metrics import PrunerMetrics
from edgeloom.apps.mergesfl.metrics import ServerMetrics, WorkerMetrics
from edgeloom.runtime.metrics import MetricFactory
from edgeloom.runtime.reporter import JobReporter
from edgeloom_operators.metrics import OperatorMetrics
from edgeloom_testkit.dashboards import (
    alert_expressions,
    alert_rules,
    dashboard_queries,
    dashboards,
    panels,
    substitute,
)

# The first test may build helm from source when the cache is cold (tens of minutes).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTINS = {"__rate_interval"}
JOB_DASHBOARDS = ("splittrainingjob.json", "prunejob.json")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not on PATH: install Prometheus (Debian: apt install prometheus)")
    return found


def run_promtool(promtool: str, *args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def job_reporter_metrics(m: MetricFactory) -> None:
    """The progress pair every coordinating role exports through its JobReporter."""
    resource = SimpleNamespace(metadata=SimpleNamespace(generation=1))
    JobReporter(SimpleNamespace(metrics=m, resource=resource), Status(), "metric")  # type: ignore[arg-type]


def exported_metric_names() -> set[str]:
    """Names of every series the job roles and the operator export, from their declarations."""
    names = {"up"}
    declarations = (ServerMetrics, WorkerMetrics, PrunerMetrics, OperatorMetrics)
    for declare in (*declarations, job_reporter_metrics):
        registry = CollectorRegistry()
        declare(MetricFactory(registry))
        for family in registry.collect():
            names |= {family.name + s for s in SERIES_SUFFIXES.get(family.type, ("",))}
    return names


# -- dashboards ------------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", sorted(dashboards()))
def test_dashboard_has_the_structure_grafana_needs(file_name: str) -> None:
    board = dashboards()[file_name]
    assert board["uid"].startswith("edgeloom-") and len(board["uid"]) <= 40
    assert board["title"].startswith("edgeloom / ")
    assert "edgeloom" in board["tags"]
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, variable in variables.items():
        if name != "datasource":
            assert variable["type"] == "query", name
            assert variable["datasource"] == DATASOURCE, name
    if file_name in JOB_DASHBOARDS:
        assert {"namespace", "job"} <= variables.keys()
        assert variables["job"]["definition"].endswith(", name)")
        assert 'namespace="$namespace"' in variables["job"]["definition"]

    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"{file_name}: duplicate panel ids"
    for panel in panels(board):
        where = f"{file_name} / {panel['title']}"
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
            used = {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", target["expr"])}
            assert used <= variables.keys() | GRAFANA_BUILTINS, f"{where}: {used}"


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = dashboards().values()
    assert {b["uid"] for b in boards} == {
        "edgeloom-splittrainingjob",
        "edgeloom-prunejob",
        "edgeloom-operator",
    }
    assert len({b["title"] for b in boards}) == len(boards)


def test_dashboards_query_only_metrics_that_exist() -> None:
    exported = exported_metric_names()
    assert {"edgeloom_steps_completed", "edgeloom_compute_seconds_bucket"} <= exported
    assert "edgeloom_operator_reconciles_total" in exported
    for query in dashboard_queries("ml", "mnist"):
        used = set(re.findall(r"\b(?:edgeloom_\w+|up)(?=\s*\{)", query.expr))
        assert used, f"{query}: no metric selector"
        assert used <= exported, f"{query}: {used - exported}"


def test_dashboard_queries_substitute_every_variable() -> None:
    queries = dashboard_queries("ml", "mnist", operator_namespace="edgeloom-system")
    assert len(queries) == sum(len(p["targets"]) for b in dashboards().values() for p in panels(b))
    for query in queries:
        assert "$" not in query.expr, query
    operator = [q for q in queries if q.dashboard == "edgeloom / Operator"]
    assert operator and all('namespace="edgeloom-system"' in q.expr for q in operator)
    assert any('name="mnist"' in q.expr and "[1m]" in q.expr for q in queries)
    with pytest.raises(KeyError):
        substitute('up{pod="$unknown"}', {})


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"edgeloom_dashboard:query_{i}", "expr": q.expr}
        for i, q in enumerate(dashboard_queries("ml", "mnist"))
    ]
    (tmp_path / "dashboards.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    run_promtool(promtool, "check", "rules", "dashboards.yaml", cwd=tmp_path)


# -- alerts ----------------------------------------------------------------------------------

SERVER = {"kind": "SplitTrainingJob", "role": "server", "namespace": "ml", "name": "mnist"}
SERVER_POD = {**SERVER, "pod": "mnist-server-x7k2p"}
PRUNER_POD = {
    "kind": "PruneJob",
    "role": "pruner",
    "namespace": "ml",
    "name": "llama",
    "pod": "llama-pruner-q9d4s",
}
OPERATOR_POD = {"namespace": "edgeloom-system", "pod": "demo-edgeloom-operator-5d9f7c8b4-m2xkq"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def alert(
    name: str, at: str, labels: dict[str, str], summary: str, description: str
) -> dict[str, Any]:
    expected = {"exp_labels": labels, "exp_annotations": {"summary": summary}}
    expected["exp_annotations"]["description"] = description
    return {"eval_time": at, "alertname": name, "exp_alerts": [expected]}


def no_alert(name: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


ALERT_TESTS: list[dict[str, Any]] = [
    {  # rounds advance for 10 min, then stop at 10 of 20; a new server pod starts at 20 min
        "interval": "1m",
        "input_series": [
            series("edgeloom_steps_completed", SERVER_POD, "0+1x10 10x40"),
            series("edgeloom_steps_planned", SERVER_POD, "20x50"),
            series("edgeloom_steps_completed", {**SERVER, "pod": "mnist-server-new"}, "_x20 3x30"),
            series("edgeloom_steps_planned", {**SERVER, "pod": "mnist-server-new"}, "_x20 20x30"),
            series(
                "edgeloom_steps_completed",
                {**SERVER, "name": "done", "pod": "done-server-a"},
                "5x50",
            ),
            series(
                "edgeloom_steps_planned",
                {**SERVER, "name": "done", "pod": "done-server-a"},
                "5x50",
            ),
        ],
        "alert_rule_test": [
            no_alert("EdgeloomJobStalled", "20m"),
            alert(
                "EdgeloomJobStalled",
                "30m",
                {**SERVER_POD, "severity": "warning"},
                "SplitTrainingJob ml/mnist is stalled",
                "Its server mnist-server-x7k2p has completed no step for 15m; it is at step 10,"
                " short of its planned steps.",
            ),
        ],
    },
    {  # the same rule for another kind: a pruner that plans one block ahead stops at block 10
        "interval": "1m",
        "input_series": [
            series("edgeloom_steps_completed", PRUNER_POD, "0+1x10 10x50"),
            series("edgeloom_steps_planned", PRUNER_POD, "1+1x10 11x50"),
            series("edgeloom_steps_completed", {**PRUNER_POD, "name": "ok"}, "24x60"),
            series("edgeloom_steps_planned", {**PRUNER_POD, "name": "ok"}, "24x60"),
        ],
        "alert_rule_test": [
            no_alert("EdgeloomJobStalled", "20m"),
            alert(
                "EdgeloomJobStalled",
                "30m",
                {**PRUNER_POD, "severity": "warning"},
                "PruneJob ml/llama is stalled",
                "Its pruner llama-pruner-q9d4s has completed no step for 15m; it is at step 10,"
                " short of its planned steps.",
            ),
        ],
    },
    {  # one worker dropped at minute 11
        "interval": "1m",
        "input_series": [series("edgeloom_workers_dropped_total", SERVER_POD, "0x10 1x20")],
        "alert_rule_test": [
            no_alert("EdgeloomWorkersDropped", "10m"),
            alert(
                "EdgeloomWorkersDropped",
                "15m",
                {**SERVER_POD, "severity": "info"},
                "SplitTrainingJob ml/mnist dropped workers",
                "About 1 workers were dropped from its rounds in the last 10m; the job goes on"
                " without them.",
            ),
            no_alert("EdgeloomWorkersDropped", "30m"),
        ],
    },
    {  # a worker target down from minute 6; another application's target is not ours
        "interval": "1m",
        "input_series": [
            series(
                "up",
                {
                    "app_kubernetes_io_name": "edgeloom",
                    "namespace": "ml",
                    "pod": "mnist-worker-0-3-abcde",
                },
                "1x5 0x20",
            ),
            series(
                "up", {"app_kubernetes_io_name": "other", "namespace": "ml", "pod": "x"}, "0x25"
            ),
        ],
        "alert_rule_test": [
            no_alert("EdgeloomTargetDown", "9m"),
            alert(
                "EdgeloomTargetDown",
                "15m",
                {
                    "app_kubernetes_io_name": "edgeloom",
                    "namespace": "ml",
                    "pod": "mnist-worker-0-3-abcde",
                    "severity": "warning",
                },
                "Metrics of ml/mnist-worker-0-3-abcde are stale",
                "Prometheus has not scraped mnist-worker-0-3-abcde for 5m: the pod's metrics, and"
                " the operator's health checks on them, are out of date.",
            ),
        ],
    },
    {  # SplitTrainingJob reconciles keep failing; PruneJob had a burst; invalid specs don't count
        "interval": "1m",
        "input_series": [
            series(
                "edgeloom_operator_reconciles_total",
                {**OPERATOR_POD, "kind": "SplitTrainingJob", "outcome": "error"},
                "0+1x30",
            ),
            series(
                "edgeloom_operator_reconciles_total",
                {**OPERATOR_POD, "kind": "PruneJob", "outcome": "error"},
                "0+1x5 5x25",
            ),
            series(
                "edgeloom_operator_reconciles_total",
                {**OPERATOR_POD, "kind": "PruneJob", "outcome": "invalid"},
                "0+1x30",
            ),
        ],
        "alert_rule_test": [
            no_alert("EdgeloomOperatorReconcileErrors", "5m"),
            alert(
                "EdgeloomOperatorReconcileErrors",
                "20m",
                {**OPERATOR_POD, "kind": "SplitTrainingJob", "severity": "warning"},
                "The edgeloom operator keeps failing to reconcile SplitTrainingJob resources",
                f"Operator edgeloom-system/{OPERATOR_POD['pod']} has had SplitTrainingJob"
                " reconcile errors for at least 10m; see its log and the resources' events.",
            ),
        ],
    },
]


@pytest.fixture(scope="module")
def default_rules() -> dict[str, Any]:
    return alert_rules()


def test_alert_rules_pass_promtool_check(
    promtool: str, default_rules: dict[str, Any], tmp_path: Path
) -> None:
    assert set(alert_expressions(default_rules)) == {
        "EdgeloomJobStalled",
        "EdgeloomWorkersDropped",
        "EdgeloomTargetDown",
        "EdgeloomOperatorReconcileErrors",
    }
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(default_rules))
    run_promtool(promtool, "check", "rules", "alerts.yaml", cwd=tmp_path)


def test_alerts_fire_when_they_should_and_not_for_healthy_jobs(
    promtool: str, default_rules: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(default_rules))
    tests = {"rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": ALERT_TESTS}
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests))
    run_promtool(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)


def test_alert_thresholds_follow_the_chart_values() -> None:
    thresholds = {
        "stalledFor": "2m",
        "workersDroppedWindow": "4m",
        "staleFor": "1m",
        "reconcileErrorsFor": "6m",
    }
    rules = alert_rules({"monitoring": {"prometheusRule": thresholds}})
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    exprs = alert_expressions(rules)
    assert "[2m]" in exprs["EdgeloomJobStalled"]
    assert "offset 2m" in exprs["EdgeloomJobStalled"]
    assert "[4m]" in exprs["EdgeloomWorkersDropped"]
    assert by_name["EdgeloomTargetDown"]["for"] == "1m"
    assert by_name["EdgeloomOperatorReconcileErrors"]["for"] == "6m"
