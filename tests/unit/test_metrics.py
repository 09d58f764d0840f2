"""MetricFactory: naming rules, bounded labels, exposition and the /metrics endpoint."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edgeloom.runtime.metrics import ALLOWED_LABELS, MetricFactory


@pytest.fixture
def factory() -> MetricFactory:
    return MetricFactory(
        CollectorRegistry(), const_labels={"kind": "SplitTrainingJob", "role": "server"}
    )


def samples(factory: MetricFactory) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parsed exposition: sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(factory.exposition().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


# --- names --------------------------------------------------------------------------------------


def test_names_get_the_edgeloom_prefix(factory: MetricFactory) -> None:
    factory.counter("rounds_total", "Rounds finished.").inc()
    factory.gauge("participants", "Workers taking part.").set(4)
    factory.histogram("round_seconds", "Round duration.").observe(0.2)

    names = set(samples(factory))

    assert {
        "edgeloom_rounds_total",
        "edgeloom_participants",
        "edgeloom_round_seconds_count",
        "edgeloom_round_seconds_bucket",
    } <= names
    assert not any(n.startswith(("rounds", "participants", "round_seconds")) for n in names)


def test_counter_must_end_in_total(factory: MetricFactory) -> None:
    with pytest.raises(ValueError, match="_total"):
        factory.counter("rounds", "Rounds finished.")


@pytest.mark.parametrize("make", ["gauge", "histogram"])
def test_non_counters_must_not_end_in_total(factory: MetricFactory, make: str) -> None:
    with pytest.raises(ValueError, match="_total"):
        getattr(factory, make)("bytes_total", "Not a counter.")


@pytest.mark.parametrize(
    "name", ["latency_ms", "latency_milliseconds", "payload_kb", "payload_mb", "cpu_percent"]
)
def test_non_base_units_are_refused(factory: MetricFactory, name: str) -> None:
    with pytest.raises(ValueError, match="base units"):
        factory.gauge(name, "Wrong unit.")


@pytest.mark.parametrize(
    "name", ["RoundSeconds", "round-seconds", "1st_round", "", "edgeloom_round_seconds", "_x"]
)
def test_names_must_be_snake_case_without_prefix(factory: MetricFactory, name: str) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        factory.gauge(name, "Bad name.")


def test_histogram_without_unit_suffix_is_refused(factory: MetricFactory) -> None:
    with pytest.raises(ValueError, match="must name its unit"):
        factory.histogram("round_duration", "No unit.")


@pytest.mark.parametrize("name", ["round_seconds", "payload_bytes", "kept_ratio"])
def test_histogram_with_base_unit_is_accepted(factory: MetricFactory, name: str) -> None:
    factory.histogram(name, "Has a unit.").observe(1.0)

    assert f"edgeloom_{name}_count" in samples(factory)


def test_unitless_gauge_is_accepted(factory: MetricFactory) -> None:
    factory.gauge("participants", "Workers taking part.").set(7)

    assert samples(factory)["edgeloom_participants"][0][1] == 7


def test_name_with_trailing_newline_is_refused(factory: MetricFactory) -> None:
    with pytest.raises(ValueError):
        factory.gauge("participants\n", "Bad name.")


# --- labels -------------------------------------------------------------------------------------


def test_const_label_outside_bounded_set_is_refused() -> None:
    with pytest.raises(ValueError, match="request_id"):
        MetricFactory(CollectorRegistry(), const_labels={"kind": "X", "request_id": "42"})


@pytest.mark.parametrize(
    "make, name", [("counter", "requests_total"), ("gauge", "queue"), ("histogram", "wait_seconds")]
)
def test_metric_label_outside_bounded_set_is_refused(
    factory: MetricFactory, make: str, name: str
) -> None:
    with pytest.raises(ValueError, match="trace_id"):
        getattr(factory, make)(name, "Doc.", labels=("outcome", "trace_id"))


def test_every_allowed_label_is_accepted() -> None:
    factory = MetricFactory(CollectorRegistry())
    labels = tuple(sorted(ALLOWED_LABELS))

    factory.gauge("labelled", "All labels.", labels=labels).labels(*labels).set(1)

    assert samples(factory)["edgeloom_labelled"][0][0] == {name: name for name in labels}


# --- exposition ---------------------------------------------------------------------------------


def test_exposition_carries_const_labels(factory: MetricFactory) -> None:
    factory.counter("rounds_total", "Rounds finished.").inc(3)

    text = factory.exposition().decode()

    assert 'edgeloom_rounds_total{kind="SplitTrainingJob",role="server"} 3.0' in text
    assert "# TYPE edgeloom_rounds_total counter" in text


def test_labelled_metric_child_gets_const_and_own_labels(factory: MetricFactory) -> None:
    counter = factory.counter("messages_total", "Messages.", labels=("outcome",))

    factory.child(counter, outcome="ok").inc()
    factory.child(counter, outcome="error").inc(2)

    found = samples(factory)["edgeloom_messages_total"]
    assert {labels["outcome"]: value for labels, value in found} == {"ok": 1.0, "error": 2.0}
    for labels, _ in found:
        assert labels["kind"] == "SplitTrainingJob" and labels["role"] == "server"


def test_histogram_buckets_are_configurable(factory: MetricFactory) -> None:
    factory.histogram("wait_seconds", "Wait.", buckets=(0.5, 1.0)).observe(0.7)

    found = samples(factory)["edgeloom_wait_seconds_bucket"]

    assert {labels["le"]: value for labels, value in found} == {"0.5": 0.0, "1.0": 1.0, "+Inf": 1.0}


def test_factories_with_their_own_registries_do_not_collide() -> None:
    a, b = MetricFactory(CollectorRegistry()), MetricFactory(CollectorRegistry())

    a.gauge("participants", "Workers.").set(1)
    b.gauge("participants", "Workers.").set(2)

    assert samples(a)["edgeloom_participants"][0][1] == 1
    assert samples(b)["edgeloom_participants"][0][1] == 2


def test_write_puts_exposition_in_a_file(factory: MetricFactory, tmp_path: Path) -> None:
    factory.gauge("participants", "Workers.").set(5)
    path = tmp_path / "nested" / "metrics.prom"

    factory.write(path)

    assert path.read_bytes() == factory.exposition()


def test_serve_exposes_metrics_over_http_on_loopback(factory: MetricFactory) -> None:
    factory.gauge("participants", "Workers.").set(9)

    port = factory.serve(0, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()

    assert port > 0
    assert 'edgeloom_participants{kind="SplitTrainingJob",role="server"} 9.0' in body
