"""Every metric the HatInferenceService roles export, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeloom.algos.hat.speculative import Generation
from edgeloom.runtime.metrics import MetricFactory

if TYPE_CHECKING:  # the cloud's module imports this one, and emulation imports the cloud's
    from edgeloom.apps.hat.emulation import Emulated

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OUTCOMES = ("ok", "refused", "failed")


class DeviceMetrics:
    """A device: its requests' latencies and how well its drafts do."""

    def __init__(self, m: MetricFactory) -> None:
        self._factory = m
        self.ttft = m.histogram(
            "ttft_seconds", "Time to the first token of a request.", buckets=LATENCY_BUCKETS
        )
        self.tbt = m.histogram(
            "tbt_seconds", "Time between a request's later tokens.", buckets=LATENCY_BUCKETS
        )
        self.emulated_ttft = m.histogram(
            "emulated_ttft_seconds",
            "Time to the first token in the device's emulated time (its profile).",
            buckets=LATENCY_BUCKETS,
        )
        self.emulated_tbt = m.histogram(
            "emulated_tbt_seconds",
            "Mean time between a request's later tokens, emulated.",
            buckets=LATENCY_BUCKETS,
        )
        self.drafted = m.counter("drafted_tokens_total", "Draft tokens sent for verification.")
        self.accepted = m.counter("accepted_tokens_total", "Draft tokens the cloud confirmed.")
        self.generated = m.counter("generated_tokens_total", "Tokens answered to clients.")
        self.gamma = m.gauge("draft_length", "Draft length of the last verification round.")
        self.chunk = m.gauge("chunk_tokens", "Prefill chunk size of the last request.")
        self.active = m.gauge("active_requests", "Requests being decoded now.")
        self._bytes = m.counter(
            "hidden_bytes_total", "Hidden-state bytes to and from the cloud.", ("channel",)
        )
        self._requests = m.counter("requests_total", "Requests answered, by outcome.", ("outcome",))
        for outcome in OUTCOMES:
            m.child(self._requests, outcome=outcome)
        for channel in ("uplink", "downlink"):
            m.child(self._bytes, channel=channel)

    def refused(self) -> None:
        """Count a request answered with a 4xx error before any decoding."""
        self._factory.child(self._requests, outcome="refused").inc()

    def finished(self, outcome: str, result: Generation, emulated: Emulated) -> None:
        """Count one request's end, its decoding statistics and its emulated latencies."""
        self._factory.child(self._requests, outcome=outcome).inc()
        self.drafted.inc(sum(result.drafted))
        self.accepted.inc(sum(result.accepted))
        self.generated.inc(len(result.tokens))
        if result.drafted:
            self.gamma.set(result.drafted[-1])
        self._factory.child(self._bytes, channel="uplink").inc(emulated.uplink_bytes)
        self._factory.child(self._bytes, channel="downlink").inc(emulated.downlink_bytes)
        self.chunk.set(emulated.chunk_size)
        figures = emulated.figures()
        for histogram, name in ((self.emulated_ttft, "ttft_s"), (self.emulated_tbt, "tbt_s")):
            value = figures[name]
            if value is not None:
                histogram.observe(value)


class CloudMetrics:
    """A cloud replica: its load, the autoscaling signal."""

    def __init__(self, m: MetricFactory) -> None:
        self.sessions = m.gauge("sessions", "Sequences cached by this replica.")
        self.queue = m.gauge("queue_length", "Middle requests received and not yet answered.")
        self.positions = m.counter("middle_positions_total", "Positions run through the middle.")
        self.compute = m.counter(
            "middle_compute_seconds_total", "Seconds spent running the middle blocks."
        )
        self.refused = m.counter("refused_requests_total", "Requests refused (bounds, malformed).")
