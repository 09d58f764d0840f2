"""The CRDs' admission rules and the pydantic models refuse the same specs.

A spec meets two validators: the API server (the CRD's OpenAPI schema, then its CEL rules,
``x-kubernetes-validations``) and pydantic (``edgeloom run``, the operator, ``edgeloom serve``).
The schema is generated from the models, the cross-field rules are written twice: as CEL in
each kind's ``KindInfo.cel_rules`` and as model validators. These tests evaluate the CEL for
real (``celpy``, after applying the schema's defaults as the API server does) and check that

* every CEL rule has an invalid spec that the rule and pydantic both refuse, each with a
  message naming a field the rule reads;
* on random specs around the rules' edges, pydantic accepts exactly when every rule holds;
* every range, enum, length and item-count bound of the schema refuses the value just past
  it and accepts the value on it, in the schema and in pydantic alike;
* every number of every kind's spec is bounded on both sides and finite, and a value of the
  wrong JSON type (``true`` or ``"5"`` for an integer) is refused by both, never coerced;
* every ``metadata.name`` that ``parse_resource`` refuses is refused by the CRD's rules on the
  name (``KindInfo.name_rules``, on the schema's root), and for a job kind the same names.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from celpy import celtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloom.api.crdgen import generate_crd
from edgeloom.api.registry import KindInfo, kind_info, kinds
from edgeloom.api.resource import API_VERSION, InvalidResource, parse_resource

REPO = Path(__file__).resolve().parents[2]
Spec = dict[str, Any]


def _examples() -> dict[str, Spec]:
    """The first example file of each kind: the valid spec every case starts from."""
    found: dict[str, Spec] = {}
    for path in sorted(REPO.glob("examples/*.yaml")):
        doc = yaml.safe_load(path.read_text())
        found.setdefault(doc["kind"], doc["spec"])
    return found


BASES = _examples()

# One invalid spec per CEL rule, keyed by the rule's message: a patch merged into the kind's
# example. Each must pass the OpenAPI schema, so that the CEL rule is what refuses it.
CASES: dict[str, dict[str, list[Spec]]] = {
    "SplitTrainingJob": {
        "workers[*].count must add up to at most 1000 workers": [
            {"workers": [{"name": "a", "count": 1000}, {"name": "b", "count": 1}]},
        ],
        "workers[*].name must be unique: each group becomes a Job of that name": [
            {"workers": [{"name": "a", "count": 1}, {"name": "a", "count": 2}]},
            {
                "workers": [
                    {"name": "a", "count": 1},
                    {"name": "b", "count": 1},
                    {"name": "a", "count": 1},
                ]
            },
        ],
        "training.minBatchSize must not exceed training.maxBatchSize": [
            {"training": {"minBatchSize": 97, "maxBatchSize": 96}},
        ],
        "training.workersPerRound must not exceed the number of workers": [
            {"training": {"workersPerRound": 11}},
        ],
        "dataset.path is required for cifar10 and imagefolder": [
            {"model": {"architecture": "cifar-alexnet"}, "dataset": {"name": "cifar10"}},
            {"model": {"architecture": "cifar-alexnet"}, "dataset": {"name": "imagefolder"}},
            {
                "model": {"architecture": "cifar-alexnet"},
                "dataset": {"name": "cifar10", "path": ""},
            },
        ],
        "participation.minWorkers must not exceed the number of workers": [
            {"participation": {"minWorkers": 11}},
        ],
        "model.architecture cnn1d needs dataset.name mnist1d": [
            {"dataset": {"name": "digits"}},
        ],
        "model.architecture digits-cnn needs dataset.name digits": [
            {"model": {"architecture": "digits-cnn"}},
        ],
        "model.architecture cifar-alexnet needs dataset.name cifar10 or fashion-mnist or "
        "imagefolder": [
            {"model": {"architecture": "cifar-alexnet"}, "dataset": {"name": "digits"}},
        ],
        "model.splitPoint must be below 5 for cnn1d": [
            {"model": {"splitPoint": 5}},
        ],
        "model.splitPoint must be below 4 for digits-cnn": [
            {
                "model": {"architecture": "digits-cnn", "splitPoint": 4},
                "dataset": {"name": "digits"},
            },
        ],
        "model.splitPoint must be below 8 for cifar-alexnet": [
            {
                "model": {"architecture": "cifar-alexnet", "splitPoint": 8},
                "dataset": {"name": "cifar10", "path": "/data/cifar"},
            },
        ],
    },
    "PruneJob": {
        "exactly one of model.builtin, model.path or model.objectStore must be set": [
            {"model": {"builtin": None}},
            {"model": {"path": "/models/llama"}},
            {"model": {"objectStore": {"bucket": "models", "name": "llama"}}},
            {"model": {"builtin": None, "path": "/m", "objectStore": {"bucket": "b", "name": "n"}}},
        ],
        "calibration.path is required when calibration.source is text": [
            {"calibration": {"source": "text"}},
            {"calibration": {"source": "text", "path": ""}},
        ],
        "output.volumeClaim needs an absolute output.path to mount it at": [
            {"output": {"volumeClaim": "models"}},
            {"output": {"volumeClaim": "models", "path": "pruned/llama"}},
        ],
    },
    "HatInferenceService": {
        "devices[*].count must add up to at most 256 devices": [
            {"devices": [{"name": "a", "count": 200}, {"name": "b", "count": 57}]},
        ],
        "devices[*].name must be unique: each group becomes a Deployment of that name": [
            {"devices": [{"name": "a", "count": 1}, {"name": "a", "count": 2}]},
        ],
        "speculation.gammaInitial must lie between speculation.gammaMin and speculation.gammaMax": [
            {"speculation": {"gammaMin": 5, "gammaMax": 6}},
            {"speculation": {"gammaInitial": 7, "gammaMax": 6}},
        ],
        "speculation.defaultMaxTokens must not exceed speculation.maxTokens": [
            {"speculation": {"defaultMaxTokens": 300, "maxTokens": 256}},
        ],
        "cloud.replicas must lie between cloud.minReplicas and cloud.maxReplicas": [
            {"cloud": {"replicas": 2}},
            {"cloud": {"replicas": 2, "minReplicas": 3, "maxReplicas": 4}},
        ],
        "exactly one of model.builtin, model.path or model.objectStore must be set": [
            {"model": {"builtin": None}},
            {"model": {"path": "/models/llama"}},
        ],
        "exactly one of adapter.source.builtin, adapter.source.path or "
        "adapter.source.objectStore must be set": [
            {"adapter": {"source": {}}},
            {"adapter": {"source": {"path": "/a", "objectStore": {"bucket": "b", "name": "n"}}}},
        ],
        "adapter.source takes a path or objectStore: there are no built-in adapters": [
            {"adapter": {"source": {"builtin": "tiny-llama"}}},
        ],
    },
}


PYDANTIC_WORDING = {
    # ModelSource is shared by several kinds, so its own validator cannot say "model."
    "exactly one of model.builtin, model.path or model.objectStore must be set": (
        "exactly one of builtin, path or objectStore must be set"
    ),
    "exactly one of adapter.source.builtin, adapter.source.path or adapter.source.objectStore "
    "must be set": "exactly one of builtin, path or objectStore must be set",
    # FolderOutput is shared too.
    "output.volumeClaim needs an absolute output.path to mount it at": (
        "volumeClaim needs an absolute path to mount it at"
    ),
}
"""Where pydantic words a rule differently from its CEL message (otherwise they are equal)."""


# -- the two validators ------------------------------------------------------------------------


@cache
def spec_schema(kind: str) -> dict[str, Any]:
    crd = generate_crd(kind_info(kind))
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


def schema_errors(kind: str, spec: Spec, at: tuple[str | int, ...] | None = None) -> list[str]:
    """What the API server's OpenAPI validation says (Draft 4, as Kubernetes' schemas are),
    only about the field ``at`` when given."""
    validator = jsonschema.Draft4Validator(spec_schema(kind))
    return [
        f"{_wire_path(tuple(e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(spec)
        if at is None or tuple(e.absolute_path) == at
    ]


def pydantic_errors(kind: str, spec: Spec, name: str = "x") -> str | None:
    """``parse_resource``'s message for a spec, or None when it accepts it."""
    info = kind_info(kind)
    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    try:
        parse_resource(doc, info.spec_model, kind)
    except InvalidResource as err:
        return str(err)
    return None


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` as CEL sees it at admission: schema defaults filled in (nested defaults too),
    ``number`` fields as doubles."""
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties", {})
        out = dict(value)
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
        return {k: with_defaults(v, properties.get(k, {})) for k, v in out.items()}
    if kind == "array" and isinstance(value, list):
        return [with_defaults(item, schema.get("items", {})) for item in value]
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _list_sum(values: celtypes.ListType) -> celtypes.Value:
    """Kubernetes' CEL list library ``sum()`` (not in core CEL)."""
    total: celtypes.Value = celtypes.IntType(0)
    for item in values:
        total = total + item
    return total


@cache
def cel_program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions={"sum": _list_sum})


def refusing(rules: tuple[tuple[str, str], ...], value: Any) -> list[str]:
    """The messages of the ``rules`` that refuse ``value`` as their ``self`` (a rule that cannot
    be evaluated, as on a missing field, raises: the API server would refuse with its error)."""
    activation = {"self": celpy.json_to_cel(value)}
    failed = []
    for rule, message in rules:
        result = cel_program(rule).evaluate(activation)
        assert isinstance(result, celtypes.BoolType), (rule, result)
        if not result:
            failed.append(message)
    return failed


def cel_failures(kind: str, spec: Spec) -> list[str]:
    """The messages of the kind's CEL rules on ``spec`` that refuse it, defaults applied."""
    return refusing(kind_info(kind).cel_rules, with_defaults(spec, spec_schema(kind)))


def cel_name_failures(kind: str, name: str) -> list[str]:
    """The messages of the kind's rules on ``self.metadata.name`` that refuse ``name``."""
    return refusing(kind_info(kind).name_rules, {"metadata": {"name": name}})


# -- helpers -----------------------------------------------------------------------------------


def merged(base: Spec, patch: Spec) -> Spec:
    """``base`` with ``patch`` merged in; a None in the patch removes the key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fields_read(rule: str) -> list[str]:
    """The spec fields a CEL rule reads, e.g. ``training.minBatchSize`` (``workers`` in
    ``self.workers.map(...)``: a method is not a field)."""
    return re.findall(r"self\.([A-Za-z]+(?:\.[A-Za-z]+\b(?!\())*)", rule)


def names_a_field(text: str, fields: list[str]) -> bool:
    """Whether an error text names one of ``fields``, in full or as ``spec.<parent>: ...<leaf>``
    (a nested model's validator is reported at the nested model)."""
    for field in fields:
        parent, _, leaf = field.rpartition(".")
        if field in text or (parent and f"spec.{parent}" in text and leaf in text):
            return True
    return False


def cel_kinds() -> list[KindInfo]:
    return [kind_info(kind) for kind in sorted(BASES) if kind_info(kind).cel_rules]


def invalid_cases() -> Iterator[Any]:
    for kind, by_message in CASES.items():
        for message, patches in by_message.items():
            for i, patch in enumerate(patches):
                yield pytest.param(kind, message, patch, id=f"{kind}-{message[:40]}-{i}")


# -- every CEL rule is exercised ---------------------------------------------------------------


@pytest.mark.parametrize("info", cel_kinds(), ids=lambda info: info.kind)
def test_every_cel_rule_has_an_invalid_spec(info: KindInfo) -> None:
    assert info.kind in CASES, f"{info.kind} has CEL rules but no cases in CASES"
    assert set(CASES[info.kind]) == {message for _, message in info.cel_rules}


def test_every_kind_with_cel_rules_has_an_example() -> None:
    from edgeloom.api.registry import kinds

    with_rules = {kind for kind, info in kinds().items() if info.cel_rules}
    assert with_rules <= set(BASES), "add an examples/ file for each kind with CEL rules"


@pytest.mark.parametrize("kind", sorted(BASES))
def test_examples_pass_both(kind: str) -> None:
    spec = BASES[kind]
    assert schema_errors(kind, spec) == []
    assert cel_failures(kind, spec) == []
    assert pydantic_errors(kind, spec) is None


@pytest.mark.parametrize(("kind", "message", "patch"), list(invalid_cases()))
def test_invalid_spec_is_refused_by_both(kind: str, message: str, patch: Spec) -> None:
    spec = merged(BASES[kind], patch)
    assert schema_errors(kind, spec) == [], "the case must get past the schema to the CEL rule"
    rule = next(rule for rule, msg in kind_info(kind).cel_rules if msg == message)
    fields = fields_read(rule)

    assert message in cel_failures(kind, spec)
    assert names_a_field(message, fields), f"CEL message {message!r} names none of {fields}"

    refusal = pydantic_errors(kind, spec)
    assert refusal is not None, f"pydantic accepts what CEL refuses: {message}"
    assert names_a_field(refusal, fields), f"pydantic's {refusal!r} names none of {fields}"


# -- both agree on random specs around the rules' edges -----------------------------------------


def _present(**fields: Any) -> Spec:
    return {k: v for k, v in fields.items() if v is not None}


@st.composite
def split_training_specs(draw: st.DrawFn) -> Spec:
    counts = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    names = [f"g{draw(st.integers(0, 3))}" for _ in counts]  # now and then a name twice
    architecture = draw(st.sampled_from(["cnn1d", "digits-cnn", "cifar-alexnet"]))
    fitting = {"cnn1d": ["mnist1d"], "digits-cnn": ["digits"]}.get(
        architecture, ["cifar10", "imagefolder"]
    )
    datasets = ["mnist1d", "digits", "cifar10", "imagefolder"]
    return merged(
        BASES["SplitTrainingJob"],
        {
            "workers": [{"name": n, "count": c} for n, c in zip(names, counts, strict=True)],
            "model": _present(
                architecture=architecture,
                splitPoint=draw(st.none() | st.integers(1, 9)),
            ),
            "dataset": _present(
                name=draw(st.sampled_from(fitting) | st.sampled_from(datasets)),
                path=draw(st.sampled_from([None, "", "/data", "/data"])),
            ),
            "training": _present(
                minBatchSize=draw(st.integers(1, 5)),
                maxBatchSize=draw(st.integers(2, 6)),
                workersPerRound=draw(st.none() | st.integers(1, sum(counts) + 1)),
            ),
            "participation": {"minWorkers": draw(st.integers(1, sum(counts) + 1))},
        },
    )


@st.composite
def prune_job_specs(draw: st.DrawFn) -> Spec:
    sources = {
        "builtin": draw(st.sampled_from([None, "tiny-llama", "minilm", "smollm2-135m"])),
        "path": draw(st.sampled_from([None, "", "/models/m"])),
        "objectStore": draw(st.sampled_from([None, {"bucket": "models", "name": "m"}])),
    }
    spec = merged(BASES["PruneJob"], {"model": None, "calibration": None})
    spec["model"] = _present(**sources)
    spec["calibration"] = _present(
        source=draw(st.sampled_from([None, "stdlib", "text"])),
        path=draw(st.sampled_from([None, "", "corpus.txt"])),
    )
    spec["output"] = _present(
        volumeClaim=draw(st.sampled_from([None, "models"])),
        path=draw(st.sampled_from([None, "", "pruned", "/models/pruned"])),
    )
    return spec


@st.composite
def hat_service_specs(draw: st.DrawFn) -> Spec:
    counts = draw(st.lists(st.sampled_from([1, 2, 130]), min_size=1, max_size=3))
    names = [f"g{draw(st.integers(0, 3))}" for _ in counts]  # now and then a name twice
    spec = merged(BASES["HatInferenceService"], {"speculation": None, "cloud": None})
    spec["devices"] = [{"name": n, "count": c} for n, c in zip(names, counts, strict=True)]
    spec["speculation"] = _present(
        gammaMin=draw(st.none() | st.integers(1, 5)),
        gammaInitial=draw(st.none() | st.integers(1, 9)),
        gammaMax=draw(st.none() | st.integers(3, 9)),
        maxTokens=draw(st.none() | st.integers(32, 80)),
        defaultMaxTokens=draw(st.none() | st.integers(32, 80)),
    )
    spec["cloud"] = _present(
        replicas=draw(st.none() | st.integers(1, 4)),
        minReplicas=draw(st.none() | st.integers(1, 3)),
        maxReplicas=draw(st.none() | st.integers(1, 4)),
    )
    spec["adapter"] = {
        "source": draw(
            st.sampled_from(
                [
                    None,
                    {},
                    {"path": "/a"},
                    {"builtin": "tiny-llama"},
                    {"path": "/a", "builtin": "minilm"},
                ]
            )
        )
    }
    if spec["adapter"]["source"] is None:
        del spec["adapter"]["source"]
    return spec


RANDOM_SPECS: dict[str, Callable[[], st.SearchStrategy[Spec]]] = {
    "SplitTrainingJob": split_training_specs,
    "PruneJob": prune_job_specs,
    "HatInferenceService": hat_service_specs,
}


@pytest.mark.parametrize("kind", sorted(RANDOM_SPECS))
def test_pydantic_accepts_exactly_when_every_cel_rule_holds(kind: str) -> None:
    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(RANDOM_SPECS[kind]())
    def agree(spec: Spec) -> None:
        assert schema_errors(kind, spec) == []
        failures = cel_failures(kind, spec)
        refusal = pydantic_errors(kind, spec)
        assert (refusal is None) == (not failures), (failures, refusal, spec)
        if refusal is not None:  # pydantic stops at its first broken rule, in the same words
            assert any(PYDANTIC_WORDING.get(m, m) in refusal for m in failures), (failures, refusal)

    agree()


def test_every_kind_with_cel_rules_gets_random_specs() -> None:
    assert {info.kind for info in cel_kinds()} <= set(RANDOM_SPECS)


# -- ranges, enums, lengths and item counts --------------------------------------------------


def _bounds(schema: dict[str, Any], path: tuple[str | int, ...]) -> Iterator[Any]:
    """``(path, just-past value, on-the-bound value or None)`` for every bound in the schema."""
    kind = schema.get("type")
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from _bounds(sub, (*path, name))
        return
    if kind == "array":
        yield from _array_bounds(schema, path)
        yield from _bounds(schema["items"], (*path, 0))
        return
    if "enum" in schema:
        yield path, "not-" + "-".join(schema["enum"]), None
        for value in schema["enum"]:
            yield path, None, value
    if kind in ("integer", "number"):
        yield from _numeric_bounds(schema, path, 1 if kind == "integer" else 1e-3)
    if kind == "string":
        if "maxLength" in schema:
            yield path, "a" * (schema["maxLength"] + 1), "a" * schema["maxLength"]
        if "minLength" in schema and schema["minLength"] > 0:
            yield path, "a" * (schema["minLength"] - 1), "a" * schema["minLength"]
        if "pattern" in schema:
            yield path, "-Not valid!", None


def _numeric_bounds(
    schema: dict[str, Any], path: tuple[str | int, ...], step: float
) -> Iterator[Any]:
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum"):
            yield path, low, low + step
        else:
            yield path, low - step, low
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum"):
            yield path, high, high - step
        else:
            yield path, high + step, high


def _array_bounds(schema: dict[str, Any], path: tuple[str | int, ...]) -> Iterator[Any]:
    if schema.get("minItems", 0) > 0:
        yield path, ("items", schema["minItems"] - 1), ("items", schema["minItems"])
    if "maxItems" in schema:
        yield path, ("items", schema["maxItems"] + 1), ("items", schema["maxItems"])


def _set(spec: Spec, path: tuple[str | int, ...], value: Any) -> Spec:
    out = copy.deepcopy(spec)
    node: Any = out
    for step in path[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    last = path[-1]
    if isinstance(value, tuple) and value[0] == "items":  # a list of that many items
        items = node[last]
        value = [copy.deepcopy(items[i % len(items)]) for i in range(value[1])]
        for i, item in enumerate(value):  # distinct names, where items carry one
            if isinstance(item, dict) and "name" in item:
                item["name"] = f"item-{i}"
    node[last] = value
    return out


def _wire_path(path: tuple[str | int, ...]) -> str:
    text = "spec"
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text


def naming(field: str) -> re.Pattern[str]:
    """Matches an error line about ``field`` (or a part of it)."""
    return re.compile(rf"^{re.escape(field)}(:|\[|\.)", re.MULTILINE)


def bound_cases() -> Iterator[Any]:
    for kind in sorted(BASES):
        for path, past, on in _bounds(spec_schema(kind), ()):
            yield pytest.param(kind, path, past, on, id=f"{kind}-{_wire_path(path)}-{past!r:.12}")


@pytest.mark.parametrize(("kind", "path", "past", "on"), list(bound_cases()))
def test_schema_bounds_match_pydantic(
    kind: str, path: tuple[str | int, ...], past: Any, on: Any
) -> None:
    field = _wire_path(path)
    named = naming(field)
    # Only what each side says about this field counts: setting a field inside an absent
    # object (model.objectStore.bucket) leaves its siblings missing, which both refuse too.
    if past is not None:
        spec = _set(BASES[kind], path, past)
        assert schema_errors(kind, spec, at=path), f"the schema accepts {field}={past!r}"
        refusal = pydantic_errors(kind, spec)
        assert refusal is not None and named.search(refusal), (field, past, refusal)
    if on is not None:
        spec = _set(BASES[kind], path, on)
        assert schema_errors(kind, spec, at=path) == [], f"the schema refuses {field}={on!r}"
        refusal = pydantic_errors(kind, spec) or ""
        assert not named.search(refusal), (field, on, refusal)


# -- every number bounded and finite; JSON types checked, never coerced ---------------------------

WRONG_TYPES: dict[str, list[Any]] = {
    "integer": [True, "5", 1.5],
    "number": [True, "0.5"],
    "boolean": [1, "true"],
    "string": [5, True],
}
"""Values of another JSON type, per schema type, as a file gives them (``count: true``,
``seed: "5"``, ``gpu: 1``): the API server refuses them, so pydantic must not coerce them."""


def _leaves(
    schema: dict[str, Any], path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every scalar field of a schema and its path; a list's first item stands for all."""
    kind = schema.get("type")
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from _leaves(sub, (*path, name))
    elif kind == "array":
        yield from _leaves(schema["items"], (*path, 0))
    else:
        yield path, schema


def leaf_cases(types: tuple[str, ...]) -> Iterator[tuple[str, tuple[str | int, ...], Any]]:
    for kind in sorted(BASES):
        for path, leaf in _leaves(spec_schema(kind), ()):
            if leaf.get("type") in types:
                yield kind, path, leaf


@pytest.mark.parametrize("kind", sorted(kinds()))
def test_every_number_is_bounded_on_both_sides(kind: str) -> None:
    unbounded = [
        _wire_path(path)
        for path, leaf in _leaves(spec_schema(kind), ())
        if leaf.get("type") in ("integer", "number") and not {"minimum", "maximum"} <= set(leaf)
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        pytest.param(kind, path, value, id=f"{kind}-{_wire_path(path)}-{value!r}")
        for kind, path, leaf in leaf_cases(tuple(WRONG_TYPES))
        for value in WRONG_TYPES[leaf["type"]]
    ],
)
def test_a_wrong_json_type_is_refused_by_both(
    kind: str, path: tuple[str | int, ...], value: Any
) -> None:
    field = _wire_path(path)
    spec = _set(BASES[kind], path, value)
    assert schema_errors(kind, spec, at=path), f"the schema accepts {field}={value!r}"
    refusal = pydantic_errors(kind, spec)
    assert refusal is not None and naming(field).search(refusal), (field, value, refusal)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        pytest.param(kind, path, id=f"{kind}-{_wire_path(path)}")
        for kind, path, _ in leaf_cases(("number",))
    ],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=str)
def test_a_non_finite_number_is_refused_naming_the_field(
    kind: str, path: tuple[str | int, ...], value: float
) -> None:
    field = _wire_path(path)
    refusal = pydantic_errors(kind, _set(BASES[kind], path, value)) or ""
    assert f"{field}: Input should be a finite number" in refusal.splitlines(), refusal


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        pytest.param(kind, path, value, id=f"{kind}-{_wire_path(path)}")
        for kind, path, leaf in leaf_cases(("integer",))
        for value in [float(leaf["minimum"] + (1 if leaf.get("exclusiveMinimum") else 0))]
    ],
)
def test_an_integral_number_fits_an_integer_field(
    kind: str, path: tuple[str | int, ...], value: float
) -> None:
    """The API server takes ``2.0`` for an integer field (Draft 4, and so ``jsonschema``, would
    not), so pydantic takes it too."""
    refusal = pydantic_errors(kind, _set(BASES[kind], path, value)) or ""
    assert not naming(_wire_path(path)).search(refusal), refusal


# -- metadata.name: what the operator refuses, admission refuses ---------------------------------

INVALID_NAMES = ["a" * 64, "a" * 70, "mnist1d.v2", "Job", "-job", "job-", "job_1", ""]
"""Names the API server's own check (a DNS-1123 subdomain, up to 253 characters) lets through
or not, that ``parse_resource`` refuses: too long for a label value, or not a label."""
VALID_NAMES = ["a" * 63, "a", "0job", "mnist1d-mergesfl"]


@pytest.mark.parametrize("kind", sorted(kinds()))
@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda n: f"{n[:12]}({len(n)})")
def test_a_name_parse_resource_refuses_is_refused_at_admission(kind: str, name: str) -> None:
    failures = cel_name_failures(kind, name)
    assert failures, f"the CRD admits metadata.name {name!r}"
    assert all(message.startswith("metadata.name must") for message in failures)
    refusal = pydantic_errors(kind, BASES.get(kind, {}), name) or ""
    assert naming("metadata.name").search(refusal), refusal


@pytest.mark.parametrize("kind", sorted(BASES))
@pytest.mark.parametrize("name", VALID_NAMES, ids=lambda n: f"{n[:12]}({len(n)})")
def test_a_name_both_take(kind: str, name: str) -> None:
    assert pydantic_errors(kind, BASES[kind], name) is None
    if kind_info(kind).shape == "service" and name[0].isdigit():  # no Service takes it (DNS-1035)
        assert cel_name_failures(kind, name) != []
    else:
        assert cel_name_failures(kind, name) == []


@pytest.mark.parametrize("kind", sorted(kinds()))
def test_every_name_rule_has_a_name_it_refuses(kind: str) -> None:
    refused = {m for name in INVALID_NAMES for m in cel_name_failures(kind, name)}
    assert refused == {message for _, message in kind_info(kind).name_rules}


@pytest.mark.parametrize("kind", sorted(BASES))
def test_names_are_refused_alike_by_both(kind: str) -> None:
    """A job's name rules are exactly ``parse_resource``'s; a service's may be stricter (its
    name must also suit a Service), never looser."""
    job = kind_info(kind).shape == "job"

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(st.text(alphabet="abz09-.A_", max_size=66) | st.just("a" * 64))
    def agree(name: str) -> None:
        cel_refuses = bool(cel_name_failures(kind, name))
        pydantic_refuses = pydantic_errors(kind, BASES[kind], name) is not None
        assert cel_refuses == pydantic_refuses if job else cel_refuses >= pydantic_refuses

    agree()
