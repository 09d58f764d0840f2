"""Every kind is a filled-in skeleton (docs/adding-a-kind.md): a kind that lacks a part fails here.

The matrix loops over ``kinds()`` (peft's habit of testing every method the same way): each kind
needs an example ``edgeloom run`` accepts, an operator plugin whose rendering of that example
matches a golden file, a docs page, a dashboard, a benchmark, printer columns and ``kubectl
explain`` text on every field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.crdgen import generate_crd
from edgeloom.api.registry import KindInfo, kinds
from edgeloom.bench.registry import builtin_benchmarks
from edgeloom.local.runner import load_and_validate
from edgeloom_operators.dashboards.board import kind_board, uid_of
from edgeloom_operators.dashboards.generate import DASHBOARD_DIR, check_dashboards
from edgeloom_operators.dashboards.operator import operator_board
from edgeloom_operators.kinds import default_plugins
from edgeloom_operators.metrics import OperatorMetrics
from edgeloom_operators.plugin import JobPlugin, ServicePlugin

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
KINDS = sorted(kinds().values(), key=lambda info: info.kind)


def _ids(info: KindInfo) -> str:
    return info.kind


def examples_of(info: KindInfo) -> list[Path]:
    return [
        path
        for path in sorted((ROOT / "examples").glob("*.yaml"))
        if yaml.safe_load(path.read_text()).get("kind") == info.kind
    ]


def system_of(info: KindInfo) -> str:
    """The system's package name: ``edgeloom.apps.mergesfl`` -> ``mergesfl``."""
    return info.app_module.rsplit(".", 1)[-1]


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_an_example_that_edgeloom_run_accepts(info: KindInfo) -> None:
    examples = examples_of(info)
    assert examples, f"{info.kind}: add examples/<name>.yaml"
    for path in examples:
        parsed, resource = load_and_validate(path)
        assert parsed.kind == info.kind and resource.metadata.name


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_an_operator_plugin_and_a_golden_render(info: KindInfo) -> None:
    plugins = {plugin.info.kind: plugin for plugin in default_plugins()}
    assert info.kind in plugins, f"{info.kind}: add its plugin to edgeloom_operators.kinds"
    goldens = [GOLDEN / f"{path.stem}.children.yaml" for path in examples_of(info)]
    present = [g for g in goldens if g.is_file()]
    assert present, f"{info.kind}: no golden render among {[g.name for g in goldens]}"
    for golden in present:
        owners = {
            ref["kind"]
            for child in yaml.safe_load_all(golden.read_text())
            for ref in child["metadata"].get("ownerReferences", [])
        }
        assert owners == {info.kind}, f"{golden.name} renders children of {owners}"


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_a_docs_page(info: KindInfo) -> None:
    page = ROOT / "docs" / "systems" / f"{system_of(info)}.md"
    assert page.is_file(), f"{info.kind}: add {page.relative_to(ROOT)}"
    assert info.kind in page.read_text()


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_a_dashboard_of_its_own_series(info: KindInfo) -> None:
    path = ROOT / "charts" / "edgeloom" / "dashboards" / f"{info.singular}.json"
    assert path.is_file(), f"{info.kind}: add {path.relative_to(ROOT)}"
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs and any(f'kind="{info.kind}"' in e for e in exprs)


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_a_benchmark(info: KindInfo) -> None:
    covering = [b.name for b in builtin_benchmarks() if info.kind in b.kinds]
    assert covering, f"{info.kind}: add a benchmark with kinds = ({info.kind!r},)"


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_printer_columns(info: KindInfo) -> None:
    (version,) = generate_crd(info)["spec"]["versions"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[-1] == "Age" and "Phase" in names


def _undescribed(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, prop in (schema.get("properties") or {}).items():
        where = f"{path}.{name}"
        if not str(prop.get("description", "")).strip():
            missing.append(where)
        missing += _undescribed(prop, where)
        if isinstance(prop.get("items"), dict):
            missing += _undescribed(prop["items"], f"{where}[]")
        if isinstance(prop.get("additionalProperties"), dict):
            missing += _undescribed(prop["additionalProperties"], f"{where}{{}}")
    return missing


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_kubectl_explain_has_text_for_every_field(info: KindInfo) -> None:
    (version,) = generate_crd(info)["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    assert root.get("description")
    assert _undescribed(root["properties"]["spec"], "spec") == []
    assert _undescribed(root["properties"]["status"], "status") == []


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_its_shape_is_its_plugins(info: KindInfo) -> None:
    plugin = {p.info.kind: p for p in default_plugins()}[info.kind]
    base = JobPlugin if info.shape == "job" else ServicePlugin
    assert isinstance(plugin, base), f"{info.kind} is a {info.shape}; its plugin is not a {base}"


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_admission_refuses_a_name_it_cannot_use_and_a_changed_job_spec(info: KindInfo) -> None:
    (version,) = generate_crd(info)["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    rules = [(v["rule"], v["message"]) for v in root["x-kubernetes-validations"]]
    assert rules == list(info.name_rules) and rules
    spec_rules = [v["rule"] for v in root["properties"]["spec"].get("x-kubernetes-validations", [])]
    assert ("self == oldSelf" in spec_rules) == (info.shape == "job")


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_ready_reason_progress_and_named_metric_columns(info: KindInfo) -> None:
    (version,) = generate_crd(info)["spec"]["versions"]
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert paths["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert paths["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    if info.shape == "job":
        assert info.metric is not None, f"{info.kind}: a job names its headline metric"
        assert paths["Progress"] == ".status.progress.summary"
        assert paths[info.metric.column] == ".status.progress.metricValue"
    assert "Metric" not in paths, "name the metric column after the metric"


def _facts_missing(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Fields whose description does not state their default or their range."""
    for name, prop in (schema.get("properties") or {}).items():
        where, text = f"{path}.{name}", prop.get("description", "")
        default = prop.get("default")
        scalar = default is not None and not isinstance(default, dict | list)
        if scalar and "Default: " not in text:
            yield f"{where} (default)"
        if ("minimum" in prop or "maximum" in prop) and "Range: " not in text:
            yield f"{where} (range)"
        yield from _facts_missing(prop, where)
        if isinstance(prop.get("items"), dict):
            yield from _facts_missing(prop["items"], f"{where}[]")


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_kubectl_explain_gives_defaults_and_ranges(info: KindInfo) -> None:
    (version,) = generate_crd(info)["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert list(_facts_missing(spec, "spec")) == []


@pytest.mark.parametrize("info", KINDS, ids=_ids)
def test_has_a_generated_dashboard_and_the_series_its_alerts_read(info: KindInfo) -> None:
    plugins = {plugin.info.kind: plugin for plugin in default_plugins()}
    board = kind_board(plugins[info.kind])
    path = ROOT / DASHBOARD_DIR / f"{info.singular}.json"
    assert json.loads(path.read_text()) == board, "run `edgeloom dashboards`"
    # EdgeloomJobFailed's and EdgeloomJobStalled's dashboard_url: /d/edgeloom-<kind in lower case>
    assert board["uid"] == uid_of(info.kind) == f"edgeloom-{info.kind.lower()}"
    tables = [p for p in board["panels"] if p["type"] == "table"]
    assert any(f'{{kind="{info.kind}"' in t["targets"][0]["expr"] for t in tables)
    operator = operator_board(list(plugins.values()))
    assert {"title": info.kind, "url": f"/d/{board['uid']}"}.items() <= next(
        link for link in operator["links"] if link["title"] == info.kind
    ).items()
    # EdgeloomJobFailed: one alert per failed resource of any kind, from the operator's series
    metrics = OperatorMetrics()
    metrics.phase(("ns", info.kind, "x"), "Failed", "uid-x")
    failed = {"kind": info.kind, "resource_namespace": "ns", "name": "x", "uid": "uid-x"}
    sample = metrics.factory.registry.get_sample_value(
        "edgeloom_operator_resource_phase", {**failed, "phase": "Failed"}
    )
    assert sample == 1


def test_the_committed_dashboards_are_the_generated_ones() -> None:
    assert check_dashboards(ROOT, default_plugins()) == []
