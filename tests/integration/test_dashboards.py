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
from edgeloom.apps.hat.metrics import CloudMetrics, DeviceMetrics
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

ROOT = Path(__file__).resolve().parents[2]
# The first test may build helm from source when the cache is cold (tens of minutes).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTINS = {"__rate_interval"}
KIND_DASHBOARDS = ("splittrainingjob.json", "prunejob.json", "hatinferenceservice.json")


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
    declarations = (
        ServerMetrics,
        WorkerMetrics,
        PrunerMetrics,
        DeviceMetrics,
        CloudMetrics,
        OperatorMetrics,
    )
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
    assert board["schemaVersion"] >= 36  # what grafana-foundation-sdk writes; Grafana migrates
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, variable in variables.items():
        if name != "datasource":
            assert variable["type"] == "query", name
            assert variable["datasource"] == DATASOURCE, name
    if file_name in KIND_DASHBOARDS:
        assert list(variables) == ["datasource", "namespace", "resource", "run"]
        for name in ("namespace", "resource", "run"):
            assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
        assert variables["resource"]["query"].endswith(", name)")
        assert 'resource_namespace=~"$namespace"' in variables["resource"]["query"]
        assert variables["run"]["query"].endswith(", uid)")
        links = {link["url"] for link in board["links"]}
        assert "/d/edgeloom-operator" in links  # and back: the operator's links to each kind
    assert [a["name"] for a in board["annotations"]["list"]] == ["Phase changes"]
    assert {link["type"] for link in board["links"]} >= {"dashboards"}

    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert len(rows) >= 3, f"{file_name}: panels grouped in rows"
    ids = [p["id"] for p in board["panels"]]
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
            assert "pod=~" not in target["expr"], f"{where}: pods by their labels, not names"
            used = {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", target["expr"])}
            assert used <= variables.keys() | GRAFANA_BUILTINS, f"{where}: {used}"


def test_every_dashboard_lists_its_resources_with_their_phase() -> None:
    boards = dashboards()
    for file_name in KIND_DASHBOARDS:
        kind = boards[file_name]["title"].removeprefix("edgeloom / ")
        (table,) = [p for p in panels(boards[file_name]) if p["type"] == "table"]
        (target,) = table["targets"]
        assert target["expr"].startswith(f'edgeloom_operator_resource_phase{{kind="{kind}"')
        assert target["instant"] and target["format"] == "table"
    operator_tables = [p for p in panels(boards["operator.json"]) if p["type"] == "table"]
    assert len(operator_tables) == len(KIND_DASHBOARDS)
    for table in operator_tables:
        (link,) = [
            prop["value"][0]
            for override in table["fieldConfig"]["overrides"]
            for prop in override["properties"]
            if prop["id"] == "links"
        ]
        assert "var-resource=${__data.fields.name}" in link["url"]
        assert "var-run=${__data.fields.uid}" in link["url"]


def test_failed_jobs_and_stale_targets_stand_out_by_their_thresholds() -> None:
    by_title = {p["title"]: p for b in dashboards().values() for p in panels(b)}
    failed = by_title["Failed resources"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in failed] == ["green", "red"] and failed[1]["value"] == 1
    up = by_title["Targets up"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in up] == ["red", "green"]


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = dashboards().values()
    assert {b["uid"] for b in boards} == {
        "edgeloom-splittrainingjob",
        "edgeloom-prunejob",
        "edgeloom-hatinferenceservice",
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
    queries = dashboard_queries("ml", "mnist", operator_namespace="edgeloom-system", run="u-1")
    boards = dashboards().values()
    targets = sum(len(p["targets"]) for b in boards for p in panels(b))
    assert len(queries) == targets + sum(len(b["annotations"]["list"]) for b in boards)
    for query in queries:
        assert "$" not in query.expr, query
    operator = [q for q in queries if q.dashboard == "edgeloom / Operator"]
    assert operator and all('namespace="edgeloom-system"' in q.expr for q in operator)
    assert any('name=~"mnist"' in q.expr and "[1m]" in q.expr for q in queries)
    assert any('edgeloom_run=~"u-1"' in q.expr for q in queries)
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
OPERATOR_TARGET = {
    **OPERATOR_POD,
    "app_kubernetes_io_name": "edgeloom",
    "app_kubernetes_io_instance": "edgeloom",
    "app_kubernetes_io_component": "operator",
}
MNIST_BOARD = "/d/edgeloom-splittrainingjob?var-namespace=ml&var-resource=mnist"


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


RUNBOOK = "https://github.com/edgeloom/edgeloom/blob/main/docs/operations.md"


def alert(
    name: str,
    at: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    dashboard: str,
) -> dict[str, Any]:
    """The one alert ``name`` expected at ``at``, with every annotation (its runbook section
    is ``#<name in lower case>``)."""
    annotations = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{RUNBOOK}#{name.lower()}",
        "dashboard_url": dashboard,
    }
    expected = {"exp_labels": labels, "exp_annotations": annotations}
    return {"eval_time": at, "alertname": name, "exp_alerts": [expected]}


def job_failed(name: str, uid: str) -> dict[str, Any]:
    labels = {
        "kind": "SplitTrainingJob",
        "resource_namespace": "ml",
        "name": name,
        "uid": uid,
        "severity": "warning",
    }
    (expected,) = alert(
        "EdgeloomJobFailed",
        "0m",
        labels,
        f"SplitTrainingJob ml/{name} failed",
        f"Its Ready condition says why: kubectl describe splittrainingjob {name} -n ml.",
        f"/d/edgeloom-splittrainingjob?var-namespace=ml&var-resource={name}&var-run={uid}",
    )["exp_alerts"]
    return dict(expected)


def no_alert(name: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


WORKER_TARGET = {
    "app_kubernetes_io_name": "edgeloom",
    "namespace": "ml",
    "pod": "mnist-worker-0-3-abcde",
    "edgeloom_kind": "splittrainingjob",
    "edgeloom_job": "mnist",
}


def target_down(labels: dict[str, str], dashboard: str) -> dict[str, Any]:
    pod = labels["pod"]
    (expected,) = alert(
        "EdgeloomTargetDown",
        "15m",
        {**labels, "severity": "warning"},
        f"Metrics of {labels['namespace']}/{pod} are stale",
        f"Prometheus has not scraped {pod} for 5m: the pod's metrics, and the operator's"
        " health checks on them, are out of date.",
        dashboard,
    )["exp_alerts"]
    return dict(expected)


def resource_phase(
    name: str, uid: str, phase: str, values: str, pod: str = OPERATOR_POD["pod"]
) -> dict[str, str]:
    """The per-resource series of SplitTrainingJob ml/<name> in one phase, from operator pod
    ``pod``."""
    labels = {
        **OPERATOR_TARGET,
        "pod": pod,
        "kind": "SplitTrainingJob",
        "resource_namespace": "ml",
        "name": name,
        "uid": uid,
        "phase": phase,
    }
    return series("edgeloom_operator_resource_phase", labels, values)


def operator_absent(at: str) -> dict[str, Any]:
    return alert(
        "EdgeloomOperatorAbsent",
        at,
        {"severity": "critical"},  # absent() of a comparison carries no labels
        "The edgeloom operator is not running or not scraped",
        "No operator target of release edgeloom has been up for 5m: resources are not"
        " reconciled and their deletion waits on the operator.",
        "/d/edgeloom-operator",
    )


ALERT_TESTS: list[dict[str, Any]] = [
    {  # "bad" runs 5 min, fails and stays; "good" succeeds; the operator pod restarts at 10 min
        "interval": "1m",
        "input_series": [
            resource_phase("bad", "u-1", "Running", "1x4 0x25"),
            resource_phase("bad", "u-1", "Failed", "0x4 1x5"),
            resource_phase("bad", "u-1", "Failed", "_x10 1x20", pod="operator-after-restart"),
            resource_phase("good", "u-2", "Running", "1x4 0x25"),
            resource_phase("good", "u-2", "Succeeded", "0x4 1x25"),
            # deleted at 20 min: its series is gone, and so is the alert
            resource_phase("gone", "u-3", "Failed", "1x20"),
        ],
        "alert_rule_test": [
            {
                "eval_time": "3m",
                "alertname": "EdgeloomJobFailed",
                "exp_alerts": [job_failed("gone", "u-3")],
            },
            {
                "eval_time": "15m",
                "alertname": "EdgeloomJobFailed",
                "exp_alerts": [job_failed("bad", "u-1"), job_failed("gone", "u-3")],
            },
            {
                "eval_time": "28m",
                "alertname": "EdgeloomJobFailed",
                "exp_alerts": [job_failed("bad", "u-1")],
            },
        ],
    },
    {  # the operator is scraped for 5 min, then its target is down, then gone entirely
        "interval": "1m",
        "input_series": [series("up", OPERATOR_TARGET, "1x5 0x5")],
        "alert_rule_test": [
            no_alert("EdgeloomOperatorAbsent", "5m"),
            no_alert("EdgeloomOperatorAbsent", "9m"),  # down, but not for 5m yet
            operator_absent("12m"),
        ],
    },
    {  # another release's operator being up does not hide this release's absence
        "interval": "1m",
        "input_series": [
            series("up", {**OPERATOR_TARGET, "app_kubernetes_io_instance": "other"}, "1x20"),
        ],
        "alert_rule_test": [
            no_alert("EdgeloomOperatorAbsent", "4m"),
            operator_absent("10m"),
        ],
    },
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
                MNIST_BOARD,
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
                "/d/edgeloom-prunejob?var-namespace=ml&var-resource=llama",
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
                MNIST_BOARD,
            ),
            no_alert("EdgeloomWorkersDropped", "30m"),
        ],
    },
    {  # a worker target down from minute 6; another application's target is not ours
        "interval": "1m",
        "input_series": [
            series("up", WORKER_TARGET, "1x5 0x20"),
            series("up", OPERATOR_TARGET, "1x6 0x20"),
            series(
                "up", {"app_kubernetes_io_name": "other", "namespace": "ml", "pod": "x"}, "0x25"
            ),
        ],
        "alert_rule_test": [
            no_alert("EdgeloomTargetDown", "9m"),
            {
                "eval_time": "15m",
                "alertname": "EdgeloomTargetDown",
                "exp_alerts": [
                    target_down(
                        WORKER_TARGET,
                        "/d/edgeloom-splittrainingjob?var-namespace=ml&var-resource=mnist",
                    ),
                    target_down(
                        OPERATOR_TARGET,
                        "/d/edgeloom-operator?var-operator_namespace=edgeloom-system",
                    ),
                ],
            },
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
                "/d/edgeloom-operator?var-operator_namespace=edgeloom-system",
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
        "EdgeloomJobFailed",
        "EdgeloomWorkersDropped",
        "EdgeloomTargetDown",
        "EdgeloomOperatorAbsent",
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
        "operatorAbsentFor": "3m",
        "runbookUrl": "https://runbooks.example/edgeloom",
        "grafanaUrl": "https://grafana.example/",
    }
    rules = alert_rules({"monitoring": {"prometheusRule": thresholds}})
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    exprs = alert_expressions(rules)
    assert "[2m]" in exprs["EdgeloomJobStalled"]
    assert "offset 2m" in exprs["EdgeloomJobStalled"]
    assert "[4m]" in exprs["EdgeloomWorkersDropped"]
    assert by_name["EdgeloomTargetDown"]["for"] == "1m"
    assert by_name["EdgeloomOperatorReconcileErrors"]["for"] == "6m"
    assert by_name["EdgeloomOperatorAbsent"]["for"] == "3m"
    for name, rule in by_name.items():
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"https://runbooks.example/edgeloom#{name.lower()}"
        if name != "EdgeloomTargetDown":  # its dashboard depends on the target
            assert annotations["dashboard_url"].startswith("https://grafana.example/d/edgeloom-")
        else:
            assert annotations["dashboard_url"].startswith("https://grafana.example{{ if ")


def test_every_alert_has_a_runbook_section_a_dashboard_and_a_known_severity(
    default_rules: dict[str, Any],
) -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    severities = set()
    for group in default_rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook_url"]
            assert runbook.split("#")[1] in anchors, f"{rule['alert']}: no runbook section"
            assert "/d/edgeloom-" in rule["annotations"]["dashboard_url"], rule["alert"]
            severities.add(rule["labels"]["severity"])
    assert severities == {"critical", "warning", "info"}
