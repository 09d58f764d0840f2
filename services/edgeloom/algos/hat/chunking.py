"""Prompt chunking: the chunk size of a prefill, chosen from measured stage times.

A long prompt is cut into chunks that flow through four stages: the device (input submodel,
and the output submodel on what comes back: one processor), the uplink, the cloud's middle
blocks and the downlink. Chunk ``j`` crosses the network while the cloud works on chunk
``j - 1``, so the time to the first token is about the sum of one chunk's stage times plus one
slowest stage per further chunk.

HAT's own decision rule is not public. This is the reconstruction in ``papers.md`` §4 [R]:
every stage's time is linear in the chunk size, fitted by least squares from measured chunks
(the cloud's also scaled by ``1 + queue length``, the state monitor's load), and the chunk size
is the candidate that minimises

    TTFT(c) = sum_s t_s(c) + (ceil(L / c) - 1) * max_s t_s(c).

Small chunks pay each stage's fixed cost many times; large chunks lose the overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

CANDIDATES = (32, 64, 128, 256, 512)


@dataclass(frozen=True)
class LinearCost:
    """``fixed + per_token * tokens`` seconds."""

    fixed: float
    per_token: float

    def __call__(self, tokens: int) -> float:
        return self.fixed + self.per_token * tokens

    def __add__(self, other: LinearCost) -> LinearCost:
        """The cost of doing both."""
        return LinearCost(self.fixed + other.fixed, self.per_token + other.per_token)

    @classmethod
    def fit(cls, tokens: Sequence[int], seconds: Sequence[float]) -> LinearCost:
        """The least-squares line through measured ``(tokens, seconds)`` pairs, with both
        coefficients non-negative (scipy's NNLS)."""
        if len(tokens) != len(seconds) or not tokens:
            raise ValueError("need as many token counts as times, at least one")
        design = np.column_stack([np.ones(len(tokens)), np.asarray(tokens, dtype=float)])
        (fixed, per_token), _ = nnls(design, np.asarray(seconds, dtype=float))
        return cls(float(fixed), float(per_token))


@dataclass(frozen=True)
class PrefillModel:
    """The four stages of a chunked prefill, as measured."""

    device: LinearCost
    """Input plus output submodel on the device, per chunk."""
    cloud: LinearCost
    """Middle blocks on an idle cloud, per chunk."""
    bytes_per_token: int
    """Hidden-state bytes per token in each direction."""
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    rtt_s: float = 0.0
    cloud_queue: float = 0.0
    """Requests waiting at the cloud: its stage slows by ``1 + cloud_queue``."""

    def stage_times(self, chunk: int) -> tuple[float, float, float, float]:
        """Seconds of (device, uplink, cloud, downlink) for one chunk of ``chunk`` tokens."""
        payload = chunk * self.bytes_per_token
        return (
            self.device(chunk),
            payload / self.uplink_bytes_per_s + self.rtt_s / 2,
            self.cloud(chunk) * (1 + self.cloud_queue),
            payload / self.downlink_bytes_per_s + self.rtt_s / 2,
        )

    def ttft(self, prompt_tokens: int, chunk: int) -> float:
        """Predicted time to the first token of a ``prompt_tokens`` prompt cut into chunks."""
        if chunk < 1:
            raise ValueError(f"chunk size must be positive, got {chunk}")
        chunk = min(chunk, prompt_tokens)
        stages = self.stage_times(chunk)
        return sum(stages) + (math.ceil(prompt_tokens / chunk) - 1) * max(stages)

    def best_chunk(self, prompt_tokens: int, candidates: Sequence[int] = CANDIDATES) -> int:
        """The candidate chunk size (or the whole prompt) with the smallest predicted TTFT."""
        options = sorted({min(c, prompt_tokens) for c in candidates} | {prompt_tokens})
        return min(options, key=lambda c: (self.ttft(prompt_tokens, c), -c))


class Ewma:
    """An exponentially weighted moving average: ``initial`` (a prior), or the first sample
    when there is none (None until then)."""

    def __init__(self, weight: float = 0.3, initial: float | None = None) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"the EWMA weight must be in (0, 1], got {weight}")
        self.weight = weight
        self.value: float | None = initial

    def add(self, sample: float) -> float:
        self.value = (
            sample if self.value is None else (1 - self.weight) * self.value + self.weight * sample
        )
        return self.value
