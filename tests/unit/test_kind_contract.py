"""Every kind is a filled-in skeleton (docs/adding-a-kind.md): a kind that lacks a part fails here.

The matrix loops over ``kinds()`` (peft's habit of testing every method the same way): each kind
needs an example ``edgeloom run`` accepts, an operator plugin whose rendering of that example
matches a golden file, a docs page, a dashboard, a benchmark, printer columns and ``kubectl
explain`` text on every field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.crdgen import generate_crd
from edgeloom.api.registry import KindInfo, kinds
from edgeloom.bench.registry import builtin_benchmarks
from edgeloom.local.runner import load_and_validate
from edgeloom_operators.kinds import default_plugins

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
