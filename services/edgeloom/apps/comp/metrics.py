"""Every metric the PruneJob role exports, declared once."""

from __future__ import annotations

from edgeloom.api.kinds.prunejob import PruneStage
from edgeloom.runtime.metrics import MetricFactory

STAGES = tuple(PruneStage)


class PrunerMetrics:
    def __init__(self, m: MetricFactory) -> None:
        self._factory = m
        self._stage = m.gauge("stage", "1 for the stage the pruning job is in, else 0.", ("stage",))
        self.layers_done = m.gauge("layers_done", "Blocks processed in the current stage.")
        self._params = m.gauge("parameters", "Model parameters before/after pruning.", ("stage",))
        self._quality = m.gauge(
            "quality", "Perplexity or embedding fidelity before/after pruning.", ("stage",)
        )
        self.peak_memory = m.gauge("peak_memory_bytes", "Peak resident memory of the process.")

    def stage(self, current: PruneStage) -> None:
        for name in STAGES:
            self._factory.child(self._stage, stage=name).set(1 if name == current else 0)

    def params(self, when: str, value: int) -> None:
        self._factory.child(self._params, stage=when).set(value)

    def quality(self, when: str, value: float) -> None:
        self._factory.child(self._quality, stage=when).set(value)
