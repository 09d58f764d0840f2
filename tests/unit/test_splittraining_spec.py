"""SplitTrainingJob spec rules that mirror the built-in models."""

from __future__ import annotations

import pytest

from edgeloom.api.kinds.splittraining import ARCHITECTURES, Architecture
from edgeloom.api.registry import kind_info
from edgeloom.api.resource import InvalidResource, parse_resource
from edgeloom.models.split_cnn import build_model
from edgeloom_testkit.kinds.splittraining import SMALL_SPLIT_JOB

IN_SHAPE = {"cnn1d": (1, 40), "digits-cnn": (1, 8, 8), "cifar-alexnet": (3, 32, 32)}


@pytest.mark.parametrize("arch", list(Architecture))
def test_block_counts_match_the_models(arch: Architecture) -> None:
    assert len(build_model(arch.value, 10, IN_SHAPE[arch.value])) == ARCHITECTURES[arch].blocks


def _parse(**spec: object) -> None:
    obj = {**SMALL_SPLIT_JOB, "spec": {**SMALL_SPLIT_JOB["spec"], **spec}}
    info = kind_info("SplitTrainingJob")
    parse_resource(obj, info.spec_model, info.kind)


def test_split_point_beyond_the_model_is_refused() -> None:
    with pytest.raises(InvalidResource, match=r"model\.splitPoint must be below 4"):
        _parse(model={"architecture": "digits-cnn", "splitPoint": 4})
    _parse(model={"architecture": "digits-cnn", "splitPoint": 3})


def test_architecture_must_fit_the_dataset() -> None:
    with pytest.raises(InvalidResource, match=r"cnn1d needs dataset\.name mnist1d"):
        _parse(model={"architecture": "cnn1d"})


def test_snake_case_keys_are_refused_as_kubernetes_would_drop_them() -> None:
    with pytest.raises(InvalidResource, match="min_batch_size"):
        _parse(training={"min_batch_size": 4})


def test_total_workers_are_capped() -> None:
    groups = [{"name": f"g{i}", "count": 1000} for i in range(64)]
    with pytest.raises(InvalidResource, match=r"^spec: .*workers\[\*\]\.count must add up to at"):
        _parse(workers=groups)
    _parse(workers=[{"name": "a", "count": 999}, {"name": "b", "count": 1}])
