"""Parsing resources: the example file, and invalid specs reported with the field's path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from edgeloom.api.kinds.splittraining import SplitMethod, SplitTrainingJobSpec
from edgeloom.api.resource import (
    API_VERSION,
    InvalidResource,
    format_validation_error,
    parse_resource,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "splittraining-mnist1d.yaml"
KIND = "SplitTrainingJob"


@pytest.fixture(scope="module")
def example_doc() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


@pytest.fixture
def doc(example_doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(example_doc)


def minimal(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "job"},
        "spec": {"workers": [{"name": "edge", "count": 2}], **spec},
    }


def error_of(obj: Any) -> str:
    with pytest.raises(InvalidResource) as info:
        parse_resource(obj, SplitTrainingJobSpec, KIND)
    return str(info.value)


# --- valid resources ----------------------------------------------------------------------------


def test_example_file_parses(doc: dict[str, Any]) -> None:
    resource = parse_resource(doc, SplitTrainingJobSpec, KIND)

    assert resource.metadata.name == "mnist1d-mergesfl"
    assert resource.metadata.namespace == "default"
    spec = resource.spec
    assert spec.method is SplitMethod.MERGESFL
    assert spec.worker_count == 10
    assert [g.name for g in spec.workers] == ["jetson-nano", "jetson-tx2", "jetson-agx"]
    assert spec.workers[0].profile.compute_slowdown == 4.0
    assert (spec.training.min_batch_size, spec.training.max_batch_size) == (8, 96)
    assert spec.participation.min_workers == 5
    assert spec.stop.target_accuracy == 0.85


def test_minimal_resource_gets_defaults() -> None:
    spec = parse_resource(minimal(), SplitTrainingJobSpec, KIND).spec

    assert spec.method is SplitMethod.MERGESFL
    assert spec.training.rounds == 50
    assert spec.worker_count == 2


def test_spec_round_trips_through_wire_form(doc: dict[str, Any]) -> None:
    spec = parse_resource(doc, SplitTrainingJobSpec, KIND).spec

    assert SplitTrainingJobSpec.model_validate(spec.to_wire()) == spec
    assert spec.to_wire()["training"]["minBatchSize"] == 8


def test_status_and_extra_metadata_are_carried() -> None:
    obj = minimal()
    obj["metadata"].update(uid="abc", annotations={"a": "b"}, generation=3)
    obj["status"] = {"phase": "Running"}

    resource = parse_resource(obj, SplitTrainingJobSpec, KIND)

    assert resource.metadata.generation == 3
    assert resource.metadata.uid == "abc"


# --- envelope errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["edgeloom.io/v1", "v1", None])
def test_wrong_api_version_is_named(api_version: Any) -> None:
    obj = minimal()
    obj["apiVersion"] = api_version

    message = error_of(obj)

    assert message.startswith("apiVersion:")
    assert API_VERSION in message


def test_wrong_kind_is_named() -> None:
    obj = minimal()
    obj["kind"] = "PruneJob"

    message = error_of(obj)

    assert message.startswith("kind:")
    assert "PruneJob" in message and KIND in message


@pytest.mark.parametrize("obj", [[], "text", None])
def test_non_mapping_is_refused(obj: Any) -> None:
    assert "must be a mapping" in error_of(obj)


@pytest.mark.parametrize("name", ["MNIST", "job.v1", "job_1", "-job", "job-", "a" * 64, ""])
def test_bad_metadata_name_is_named(name: str) -> None:
    obj = minimal()
    obj["metadata"]["name"] = name

    assert "metadata.name" in error_of(obj)


def test_missing_metadata_name_is_named() -> None:
    obj = minimal()
    del obj["metadata"]["name"]

    assert "metadata.name" in error_of(obj)


@pytest.mark.parametrize("uid", ["0d5c7f1e-3b1a-4c2e-9f00-5e1b2c3d4e5f", "run1", "A-1"])
def test_a_uuid_like_uid_is_accepted(uid: str) -> None:
    obj = minimal()
    obj["metadata"]["uid"] = uid

    assert parse_resource(obj, SplitTrainingJobSpec, KIND).metadata.uid == uid


@pytest.mark.parametrize("uid", ["a b", "run.1", "", "-a", "a-", "a/b", "a" * 64, 7])
def test_a_bad_uid_is_named(uid: Any) -> None:
    obj = minimal()
    obj["metadata"]["uid"] = uid

    message = error_of(obj)

    assert message.startswith("metadata.uid: ")
    assert message.split(": ", 1)[1].strip()


# --- field errors name the path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"workers": [{"name": "edge", "count": "2"}]}, "spec.workers[0].count"),
        ({"workers": [{"name": "edge", "count": True}]}, "spec.workers[0].count"),
        ({"training": {"learningRate": "0.1"}}, "spec.training.learningRate"),
        ({"gpu": "yes"}, "spec.gpu"),
        ({"workers": [{"name": 5, "count": 2}]}, "spec.workers[0].name"),
    ],
    ids=[
        "int-from-string",
        "int-from-bool",
        "float-from-string",
        "bool-from-string",
        "str-from-int",
    ],
)
def test_values_are_not_coerced_across_json_types(spec: dict[str, Any], field: str) -> None:
    assert error_of(minimal(**spec)).startswith(f"{field}: ")


def test_numbers_keep_their_json_meaning() -> None:
    obj = minimal(training={"rounds": 3.0, "learningRate": 1})

    training = parse_resource(obj, SplitTrainingJobSpec, KIND).spec.training

    assert (training.rounds, training.learning_rate) == (3, 1.0)
    assert error_of(minimal(training={"rounds": 3.5})).startswith("spec.training.rounds: ")


def test_wrong_enum_names_spec_method() -> None:
    message = error_of(minimal(method="foo"))

    assert message.startswith("spec.method:")
    assert "mergesfl" in message


def test_negative_worker_count_names_index_path(doc: dict[str, Any]) -> None:
    doc["spec"]["workers"][0]["count"] = -1

    assert error_of(doc).startswith("spec.workers[0].count:")


def test_error_in_a_later_worker_group_names_its_index(doc: dict[str, Any]) -> None:
    doc["spec"]["workers"][2]["profile"]["computeSlowdown"] = 0.5

    assert error_of(doc).startswith("spec.workers[2].profile.computeSlowdown:")


def test_missing_workers_is_named(doc: dict[str, Any]) -> None:
    del doc["spec"]["workers"]

    message = error_of(doc)

    assert message.startswith("spec.workers:")
    assert "required" in message.lower()


def test_empty_workers_is_named() -> None:
    assert error_of(minimal(workers=[])).startswith("spec.workers:")


@pytest.mark.parametrize(
    "path",
    [("spec",), ("spec", "training"), ("spec", "workers", 0)],
    ids=["spec", "nested", "list-item"],
)
def test_unknown_field_is_named(doc: dict[str, Any], path: tuple[Any, ...]) -> None:
    target: Any = doc
    for part in path:
        target = target[part]
    target["learningRat"] = 0.1

    message = error_of(doc)

    assert "learningRat" in message
    assert "xtra" in message  # pydantic: "Extra inputs are not permitted"


def test_every_problem_gets_its_own_line(doc: dict[str, Any]) -> None:
    doc["spec"]["method"] = "foo"
    doc["spec"]["workers"][1]["count"] = 0
    doc["spec"]["training"]["rounds"] = 0

    lines = error_of(doc).splitlines()

    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {
        "spec.method",
        "spec.workers[1].count",
        "spec.training.rounds",
    }


# --- cross-field rules --------------------------------------------------------------------------


def test_min_batch_above_max_batch_is_named() -> None:
    message = error_of(minimal(training={"minBatchSize": 64, "maxBatchSize": 32}))

    assert "training.minBatchSize" in message and "training.maxBatchSize" in message


def test_workers_per_round_above_worker_count_is_named() -> None:
    message = error_of(minimal(training={"workersPerRound": 3}))

    assert "training.workersPerRound" in message


def test_workers_per_round_equal_to_worker_count_is_accepted() -> None:
    spec = parse_resource(minimal(training={"workersPerRound": 2}), SplitTrainingJobSpec, KIND).spec

    assert spec.training.workers_per_round == 2


def test_min_workers_above_worker_count_is_named() -> None:
    message = error_of(minimal(participation={"minWorkers": 3}))

    assert "participation.minWorkers" in message


@pytest.mark.parametrize("dataset", ["cifar10", "imagefolder"])
def test_file_dataset_without_path_is_named(dataset: str) -> None:
    message = error_of(minimal(dataset={"name": dataset}))

    assert message.startswith("spec.dataset:")
    assert "path" in message and dataset in message


def test_file_dataset_with_path_is_accepted() -> None:
    obj = minimal(
        model={"architecture": "cifar-alexnet"}, dataset={"name": "cifar10", "path": "/data/cifar"}
    )

    assert parse_resource(obj, SplitTrainingJobSpec, KIND).spec.dataset.path == "/data/cifar"


# --- format_validation_error --------------------------------------------------------------------


class _Inner(BaseModel):
    count: int


class _Outer(BaseModel):
    items: list[_Inner]


def test_format_validation_error_uses_kubectl_paths_and_prefix() -> None:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"items": [{"count": 1}, {"count": "x"}]})

    assert format_validation_error(info.value).startswith("items[1].count:")
    assert format_validation_error(info.value, prefix="spec").startswith("spec.items[1].count:")


def test_format_validation_error_names_root_when_no_path() -> None:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate("not a mapping")

    assert format_validation_error(info.value).startswith("<root>:")
