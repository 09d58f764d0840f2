"""PruneJob: examples, field validation and the CRD schema agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.crdgen import generate_crd
from edgeloom.api.kinds.prunejob import PruneJobSpec, PruneMethod
from edgeloom.api.registry import kind_info
from edgeloom.api.resource import InvalidResource, parse_resource

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(REPO.glob("examples/prunejob-*.yaml"))
INFO = kind_info("PruneJob")


def parse(spec: dict[str, Any]) -> PruneJobSpec:
    doc = {"apiVersion": "edgeloom.io/v1alpha1", "kind": "PruneJob", "metadata": {"name": "p"}}
    return parse_resource({**doc, "spec": spec}, INFO.spec_model, INFO.kind).spec


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = generate_crd(INFO)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_examples_exist_and_parse() -> None:
    assert {p.name for p in EXAMPLES} >= {"prunejob-tiny-llama.yaml", "prunejob-minilm.yaml"}
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        spec = parse_resource(doc, INFO.spec_model, INFO.kind).spec
        assert spec.method == PruneMethod.COMP and 0 < spec.ratio < 0.9


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"ratio": 0.2}, r"spec\.model: Field required"),
        ({"model": {"builtin": "tiny-llama"}, "ratio": 0.95}, r"spec\.ratio"),
        ({"model": {"builtin": "tiny-llama"}, "ratio": 0}, r"spec\.ratio"),
        ({"model": {"builtin": "gpt4"}, "ratio": 0.2}, r"spec\.model\.builtin"),
        ({"model": {}, "ratio": 0.2}, "exactly one of builtin, path or objectStore"),
        (
            {"model": {"builtin": "minilm", "path": "/m"}, "ratio": 0.2},
            "exactly one of builtin, path or objectStore",
        ),
        (
            {"model": {"path": "/m"}, "ratio": 0.2, "calibration": {"source": "text"}},
            r"calibration\.path is required",
        ),
        ({"model": {"path": "/m"}, "ratio": 0.2, "method": "sparsegpt"}, r"spec\.method"),
        ({"model": {"path": "/m"}, "ratio": 0.2, "comp": {"steps": 0}}, r"spec\.comp\.steps"),
        (
            {"model": {"path": "/m"}, "ratio": 0.2, "calibration": {"sequence_length": 64}},
            "sequence_length",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        parse(spec)


def test_defaults() -> None:
    spec = parse({"model": {"builtin": "tiny-llama"}, "ratio": 0.2})
    assert spec.method == PruneMethod.COMP
    assert (spec.comp.layer_share, spec.comp.mask_tuning, spec.comp.steps) == (0.5, True, 4)
    assert spec.calibration.samples == 64 and spec.output.path is None


def test_schema_accepts_examples_and_refuses_bad_values(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft4Validator(schema)
    for path in EXAMPLES:
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text())["spec"])), path
    for bad in (
        {"model": {"builtin": "tiny-llama"}},
        {"model": {"builtin": "tiny-llama"}, "ratio": 0.9},
        {"model": {"builtin": "tiny-llama"}, "ratio": 0.2, "method": "bogus"},
        {"model": {"objectStore": {"bucket": "b c", "name": "m"}}, "ratio": 0.2},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_cel_rules_cover_the_cross_field_checks(schema: dict[str, Any]) -> None:
    messages = {rule["message"] for rule in schema["x-kubernetes-validations"]}
    assert messages == {
        "exactly one of model.builtin, model.path or model.objectStore must be set",
        "calibration.path is required when calibration.source is text",
        "output.volumeClaim needs an absolute output.path to mount it at",
        "spec is immutable: delete and re-create the PruneJob to run a new spec",
    }
