"""The CRD generator: structural schemas, descriptions, constraints, drift of committed files."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from edgeloom.api.base import ApiModel
from edgeloom.api.crdgen import (
    CRD_DIRS,
    HEADER,
    CrdError,
    check_crds,
    generate_crd,
    render_crd_yaml,
    write_crds,
)
from edgeloom.api.kinds.splittraining import SplitMethod, SplitTrainingJobSpec, WorkerGroup
from edgeloom.api.registry import (
    HeadlineMetric,
    KindInfo,
    ScaleSubresource,
    Shape,
    kind_info,
    kinds,
)
from edgeloom.api.service import SERVICE_SCALE, ServiceStatus
from edgeloom.api.status import Status

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "definitions"}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return generate_crd(kind_info("SplitTrainingJob"))


@pytest.fixture(scope="module")
def root(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def spec(root: dict[str, Any]) -> dict[str, Any]:
    return root["properties"]["spec"]


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` (itself included), with a kubectl-style path."""
    yield path or "<root>", node
    for name, prop in node.get("properties", {}).items():
        yield from schema_nodes(prop, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{*}}")


def all_keys(obj: Any) -> Iterator[str]:
    """Every mapping key anywhere in a nested structure."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from all_keys(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from all_keys(value)


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it: a defaulted object is defaulted again."""
    if schema.get("type") == "object" and isinstance(obj, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in obj and "default" in prop:
                obj[name] = copy.deepcopy(prop["default"])
            if name in obj:
                obj[name] = apply_defaults(prop, obj[name])
    elif schema.get("type") == "array" and isinstance(obj, list):
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


def minimal_kind(
    spec_model: type[ApiModel], status_model: type[Status] = Status, shape: Shape = "job"
) -> KindInfo:
    return KindInfo(
        kind="Probe",
        plural="probes",
        short_names=(),
        spec_model=spec_model,
        status_model=status_model,
        roles=(),
        app_module="tests.none",
        description="A kind that exists only in this test.",
        shape=shape,
        metric=HeadlineMetric("score", "A score") if shape == "job" else None,
    )


# --- structure -----------------------------------------------------------------------------


def test_crd_envelope(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "splittrainingjobs.edgeloom.io"
    assert crd["spec"]["group"] == "edgeloom.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "SplitTrainingJob",
        "listKind": "SplitTrainingJobList",
        "plural": "splittrainingjobs",
        "singular": "splittrainingjob",
        "shortNames": ["stj"],
        "categories": ["edgeloom"],
    }
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural(root: dict[str, Any]) -> None:
    assert not FORBIDDEN_KEYWORDS & set(all_keys(root))
    for path, node in schema_nodes(root):
        escape = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or escape, f"{path} has no type"
        assert node.get("type") != "null", path
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties + additionalProperties"
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(key, True) is True, f"{path}.{key} must be OpenAPI v3's boolean form"


def test_spec_is_pruned_not_preserved(spec: dict[str, Any]) -> None:
    assert all("x-kubernetes-preserve-unknown-fields" not in n for _, n in schema_nodes(spec))


def test_every_property_is_described(root: dict[str, Any]) -> None:
    for path, node in schema_nodes(root):
        for name, prop in node.get("properties", {}).items():
            if path == "<root>" and name == "metadata":
                continue  # the API server forbids any keyword on metadata but type
            assert prop.get("description", "").strip(), f"{path}.{name} has no description"
    assert root["description"] == kind_info("SplitTrainingJob").description
    assert root["properties"]["metadata"] == {"type": "object"}


def test_property_descriptions_come_from_fields_not_class_docstrings(spec: dict[str, Any]) -> None:
    method = spec["properties"]["method"]
    field = SplitTrainingJobSpec.model_fields["method"].description
    assert method["description"] == f"{field} Default: mergesfl."
    assert "items" in spec["properties"]["workers"]
    assert "description" not in spec["properties"]["workers"]["items"]


# --- constraints, required, defaults ------------------------------------------------------


def test_enum_from_str_enum(spec: dict[str, Any]) -> None:
    method = spec["properties"]["method"]
    assert method["type"] == "string"
    assert method["enum"] == [m.value for m in SplitMethod]
    assert method["default"] == "mergesfl"


def test_enum_from_literal(root: dict[str, Any]) -> None:
    status = root["properties"]["status"]["properties"]["conditions"]["items"]
    assert status["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_list_bounds_and_required(spec: dict[str, Any]) -> None:
    workers = spec["properties"]["workers"]
    assert (workers["type"], workers["minItems"], workers["maxItems"]) == ("array", 1, 64)
    assert spec["required"] == ["workers"]
    group = workers["items"]
    assert group["required"] == ["count", "name"]
    assert group["properties"]["count"]["minimum"] == 1
    assert group["properties"]["name"]["maxLength"] == 40
    assert group["properties"]["name"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def test_numeric_ranges(spec: dict[str, Any]) -> None:
    training = spec["properties"]["training"]["properties"]
    assert training["rounds"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100000,
        "default": 50,
        "description": "Maximum number of rounds. Default: 50. Range: 1 to 100000.",
    }
    lr = training["learningRate"]
    assert (lr["minimum"], lr["exclusiveMinimum"], lr["maximum"]) == (0, True, 10)
    assert "exclusiveMaximum" not in lr
    momentum = training["momentum"]
    assert (momentum["maximum"], momentum["exclusiveMaximum"]) == (1, True)


def test_optional_field_is_plain_type_without_default(spec: dict[str, Any]) -> None:
    training = spec["properties"]["training"]
    per_round = training["properties"]["workersPerRound"]
    assert per_round["type"] == "integer"
    assert per_round["minimum"] == 1
    assert "default" not in per_round
    assert "workersPerRound" not in training.get("required", [])


def test_nested_objects_default_to_empty_so_inner_defaults_apply(spec: dict[str, Any]) -> None:
    props = spec["properties"]
    for name in ("training", "model", "dataset", "partition", "ablation", "participation"):
        assert props[name]["default"] == {}, name
    assert props["workers"]["items"]["properties"]["profile"]["default"] == {}
    assert "default" not in props["workers"]


def test_status_schema(root: dict[str, Any]) -> None:
    status = root["properties"]["status"]
    assert status["properties"]["phase"]["default"] == "Pending"
    time = status["properties"]["conditions"]["items"]["properties"]["lastTransitionTime"]
    assert (time["type"], time["format"]) == ("string", "date-time")
    assert status["properties"]["finalAccuracy"]["maximum"] == 1
    assert root["required"] == ["spec"]


def test_schema_defaults_reproduce_the_model_defaults(spec: dict[str, Any]) -> None:
    submitted = {"workers": [{"name": "edge", "count": 3}]}
    admitted = apply_defaults(spec, copy.deepcopy(submitted))
    assert admitted == SplitTrainingJobSpec.model_validate(submitted).to_wire()


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c["type"]) for c in columns] == [
        ("Phase", ".status.phase", "string"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status', "string"),
        ("Reason", '.status.conditions[?(@.type=="Ready")].reason', "string"),
        ("Progress", ".status.progress.summary", "string"),
        ("Accuracy", ".status.progress.metricValue", "number"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ]


def test_cel_rules_on_spec_then_immutability(spec: dict[str, Any]) -> None:
    rules = kind_info("SplitTrainingJob").cel_rules
    assert rules
    assert spec["x-kubernetes-validations"] == [
        *({"rule": r, "message": m} for r, m in rules),
        {
            "rule": "self == oldSelf",
            "message": "spec is immutable: delete and re-create the SplitTrainingJob to run a "
            "new spec",
        },
    ]
    assert spec["description"].endswith(
        "Immutable once created: delete and re-create to change it."
    )


def test_name_rules_on_the_root(root: dict[str, Any]) -> None:
    assert root["x-kubernetes-validations"] == [
        {
            "rule": "self.metadata.name.size() <= 63",
            "message": "metadata.name must be at most 63 characters: it is the edgeloom.io/job "
            "label value of every child",
        },
        {
            "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must consist of lowercase letters, digits and '-', start "
            "with a lowercase letter or digit and end with a letter or digit: it is a label "
            "value of every child and a token of the job's NATS subjects",
        },
    ]


# --- models the generator must refuse or rewrite -------------------------------------------


class _Documented(ApiModel):
    """A class docstring is not a field description."""

    value: int = Field(default=1, description="A described value.")


class _Inner(ApiModel):
    documented: int = Field(default=0, description="Has one.")
    bare: int = 0


class _UndescribedSpec(ApiModel):
    inner: _Inner = Field(default_factory=_Inner, description="Nested.")
    nested: _Documented = Field(default_factory=_Documented)


def test_undescribed_fields_are_named() -> None:
    with pytest.raises(CrdError) as err:
        generate_crd(minimal_kind(_UndescribedSpec))
    message = str(err.value)
    assert "_UndescribedSpec" in message
    assert "_Inner.bare (spec.inner.bare) has no description" in message
    assert "_UndescribedSpec.nested (spec.nested) has no description" in message
    assert "documented" not in message


class _UnionSpec(ApiModel):
    size: int | str = Field(description="Either.")


class _AnySpec(ApiModel):
    blob: Any = Field(default=None, description="Untyped.")


class _TreeSpec(ApiModel):
    children: list[_TreeSpec] = Field(default_factory=list, description="Subtrees.")


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (_UnionSpec, "spec.size: unions are not structural"),
        (_AnySpec, "spec.blob: has no type"),
        (_TreeSpec, "spec.children[*]: _TreeSpec contains itself"),
    ],
)
def test_non_structural_models_are_refused(model: type[ApiModel], problem: str) -> None:
    with pytest.raises(CrdError) as err:
        generate_crd(minimal_kind(model))
    assert problem in str(err.value)


class _MapSpec(ApiModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels.")
    when: list[_Documented] = Field(
        default_factory=lambda: [_Documented(value=2)], description="Non-empty list default."
    )


def test_string_map_and_model_list_default() -> None:
    [version] = generate_crd(minimal_kind(_MapSpec))["spec"]["versions"]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["labels"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "default": {},
        "description": "Extra labels.",
    }
    assert props["when"]["default"] == [{"value": 2}]


class _ReplicatedSpec(ApiModel):
    replicas: int = Field(default=1, ge=0, description="Pods to run.")


def test_a_service_kind_gets_the_scale_subresource() -> None:
    info = dataclasses.replace(minimal_kind(_ReplicatedSpec, ServiceStatus), scale=SERVICE_SCALE)
    [version] = generate_crd(info)["spec"]["versions"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["replicas"]["type"] == "integer" and status["selector"]["type"] == "string"
    unselected = dataclasses.replace(info, scale=ScaleSubresource(label_selector_path=None))
    [version] = generate_crd(unselected)["spec"]["versions"]
    assert "labelSelectorPath" not in version["subresources"]["scale"]


class _Bounded(ApiModel):
    ratio: float = Field(default=0.5, gt=0, lt=1, description="Open interval")
    floor: float = Field(default=0.0, ge=0, description="Lower bound only.")
    name: str = Field(default="x", min_length=1, max_length=8, description="A name.")
    tags: list[str] = Field(
        default_factory=list, min_length=1, max_length=3, description="Some tags."
    )
    flag: bool = Field(default=True, description="A flag.")
    big: float = Field(default=1.25e7, le=1e12, ge=1, description="Large.")
    nested: _Documented = Field(default_factory=_Documented, description="Nested.")
    free: str | None = Field(default=None, description="Optional, unbounded.")


def test_descriptions_end_with_the_default_and_bounds() -> None:
    [version] = generate_crd(minimal_kind(_Bounded))["spec"]["versions"]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    described = {name: prop["description"] for name, prop in props.items()}
    assert described == {
        "ratio": "Open interval. Default: 0.5. Range: greater than 0, less than 1.",
        "floor": "Lower bound only. Default: 0. Range: at least 0.",
        "name": "A name. Default: x. Length: 1 to 8 characters.",
        "tags": "Some tags. Items: 1 to 3.",
        "flag": "A flag. Default: true.",
        "big": "Large. Default: 12500000. Range: 1 to 1000000000000.",
        "nested": "Nested.",
        "free": "Optional, unbounded.",
    }
    assert props["nested"]["properties"]["value"]["description"] == (
        "A described value. Default: 1."
    )


class _Scaled(ApiModel):
    replicas: int = Field(default=1, ge=0, le=4, description="Pods to run.")


def test_a_service_spec_stays_mutable_and_its_name_must_suit_a_service() -> None:
    info = minimal_kind(_Scaled, ServiceStatus, "service")
    [version] = generate_crd(info)["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    assert "x-kubernetes-validations" not in root["properties"]["spec"]
    assert "Immutable" not in root["properties"]["spec"]["description"]
    rules = [v["rule"] for v in root["x-kubernetes-validations"]]
    assert rules == [
        "self.metadata.name.size() <= 63",
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    ]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Ready", "Reason", "Age"]


def test_the_metric_column_is_named_after_the_headline_metric() -> None:
    metric = HeadlineMetric("embedding_fidelity", "Cosine similarity to the unpruned model")
    info = dataclasses.replace(minimal_kind(_Scaled), metric=metric)
    [version] = generate_crd(info)["spec"]["versions"]
    column = version["additionalPrinterColumns"][-2]
    assert column == {
        "name": "Embedding-fidelity",
        "type": "number",
        "jsonPath": ".status.progress.metricValue",
        "description": "Cosine similarity to the unpruned model (4 significant digits).",
    }


# --- rendered files and drift ----------------------------------------------------------------


def test_render_has_header_and_round_trips() -> None:
    info = kind_info("SplitTrainingJob")
    text = render_crd_yaml(info)
    assert text.startswith(HEADER)
    assert "edgeloom crds" in HEADER and "not edit" in HEADER
    assert yaml.safe_load(text) == generate_crd(info)
    assert render_crd_yaml(info) == text


def crd_files() -> list[str]:
    """The file of every registered kind's CRD."""
    return sorted(f"{info.plural}.edgeloom.io.yaml" for info in kinds().values())


def test_committed_crds_are_up_to_date() -> None:
    dirs = [REPO / d for d in CRD_DIRS]
    assert check_crds(dirs) == []
    chart, top = (sorted(p.name for p in d.glob("*.yaml")) for d in reversed(dirs))
    assert (
        chart
        == top
        == [
            "hatinferenceservices.edgeloom.io.yaml",
            "prunejobs.edgeloom.io.yaml",
            "splittrainingjobs.edgeloom.io.yaml",
        ]
    )


def test_check_reports_modified_missing_and_stale_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    written = write_crds([a, b])
    assert sorted(p.name for p in written) == sorted(crd_files() * 2)
    assert check_crds([a, b]) == []

    target = a / "splittrainingjobs.edgeloom.io.yaml"
    target.write_text(target.read_text().replace("minItems: 1", "minItems: 2"))
    (b / "splittrainingjobs.edgeloom.io.yaml").unlink()
    (b / "oldjobs.edgeloom.io.yaml").write_text("kind: CustomResourceDefinition\n")

    problems = check_crds([a, b])
    assert len(problems) == 3
    modified, missing, stale = problems
    assert modified.startswith(f"{target}: differs")
    assert "-" in modified and "minItems: 2" in modified and "minItems: 1" in modified
    assert missing.startswith(f"{b / 'splittrainingjobs.edgeloom.io.yaml'}: missing")
    assert stale.startswith(f"{b / 'oldjobs.edgeloom.io.yaml'}: stale")

    write_crds([a, b])
    assert check_crds([a, b]) == []
    assert not (b / "oldjobs.edgeloom.io.yaml").exists()


def test_check_reports_missing_directory(tmp_path: Path) -> None:
    problems = check_crds([tmp_path / "nowhere"])
    assert len(problems) == len(crd_files())
    for problem, name in zip(problems, crd_files(), strict=True):
        assert problem.startswith(f"{tmp_path / 'nowhere' / name}:")
        assert "missing" in problem


# --- the schema against real objects ---------------------------------------------------------


def test_spec_schema_validates_examples(spec: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    # Kubernetes' OpenAPI v3 dialect (boolean exclusiveMinimum) is JSON Schema draft 4's.
    validator = jsonschema.Draft4Validator(spec)
    jsonschema.Draft4Validator.check_schema(spec)
    valid = SplitTrainingJobSpec(workers=[WorkerGroup(name="edge", count=2)]).to_wire()
    assert not list(validator.iter_errors(valid))
    assert not list(validator.iter_errors({"workers": [{"name": "edge", "count": 2}]}))
    for bad in (
        {"workers": [{"name": "edge", "count": -1}]},
        {"workers": []},
        {},
        {"workers": [{"name": "edge", "count": 1}], "method": "bogus"},
        {"workers": [{"name": "edge", "count": 1}], "training": {"learningRate": 0}},
        {"workers": [{"name": "Edge_1", "count": 1}]},
    ):
        assert list(validator.iter_errors(bad)), bad
    for path, node in schema_nodes(spec):
        if "default" in node:
            assert not list(jsonschema.Draft4Validator(node).iter_errors(node["default"])), path


def test_a_job_kind_must_name_its_headline_metric() -> None:
    with pytest.raises(ValueError, match="Probe is a job: name its headline metric"):
        dataclasses.replace(minimal_kind(_Scaled), metric=None)
