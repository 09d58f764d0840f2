"""The device's adaptive prefill chunk size: :class:`~edgeloom.algos.hat.chunking.PrefillModel`
fed with what the device has measured.

Every request leaves its step costs on its :class:`~edgeloom.apps.hat.emulation.Timeline`: the
device's ``encode`` and ``absorb``/``verify`` times per position count, and each cloud
request's compute and the time it waited in the cloud's queue. The planner keeps the latest of
them, fits one line per stage (the device's is encoding plus absorbing a chunk), takes the link
from the device's profile, the cloud's load from the smoothed ratio of queue wait to compute
(the state monitor's ``1 + queue`` factor), and picks the chunk size of each prompt with the
smallest predicted time to the first token. Until it has seen two sizes of each kind it uses the
spec's ``chunkSize``.
"""

from __future__ import annotations

from collections import deque

from edgeloom.algos.hat.chunking import Ewma, LinearCost, PrefillModel
from edgeloom.api.device import DeviceProfile
from edgeloom.apps.hat.emulation import Timeline

KEPT = 256
"""Measurements kept per stage (the latest)."""


class ChunkPlanner:
    """Chunk sizes from the costs this device has measured."""

    def __init__(self, profile: DeviceProfile, bytes_per_token: int, first_guess: int) -> None:
        self.profile, self.bytes_per_token, self.first_guess = profile, bytes_per_token, first_guess
        self.encode: deque[tuple[int, float]] = deque(maxlen=KEPT)
        self.absorb: deque[tuple[int, float]] = deque(maxlen=KEPT)
        self.cloud: deque[tuple[int, float]] = deque(maxlen=KEPT)
        self.queue = Ewma(0.3, 0.0)

    def observe(self, timeline: Timeline) -> None:
        """Take in one request's measurements."""
        for step, positions, seconds in timeline.device_costs:
            (self.encode if step == "encode" else self.absorb).append((positions, seconds))
        for positions, compute_s, wait_s in timeline.cloud_costs:
            self.cloud.append((positions, compute_s))
            if compute_s > 0:
                self.queue.add(wait_s / compute_s)

    def model(self) -> PrefillModel | None:
        """The fitted prefill model, or None before two sizes of every stage were seen."""
        stages = (self.encode, self.absorb, self.cloud)
        if any(len({n for n, _ in samples}) < 2 for samples in stages):
            return None
        encode, absorb, cloud = (LinearCost.fit(*zip(*s, strict=True)) for s in stages)
        return PrefillModel(
            encode + absorb,
            cloud,
            self.bytes_per_token,
            self.profile.uplink_bytes_per_second,
            self.profile.downlink_bytes_per_second,
            self.profile.rtt_seconds,
            cloud_queue=self.queue.value or 0.0,
        )

    def chunk(self, prompt_tokens: int) -> int:
        """The chunk size for a prompt of ``prompt_tokens``."""
        model = self.model()
        return self.first_guess if model is None else model.best_chunk(prompt_tokens)
