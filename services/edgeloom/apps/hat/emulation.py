"""The emulated time of a HAT device's decoding: measured compute x the device's slowdown,
bytes / bandwidth + RTT on its links, and the cloud's own emulated clock.

:class:`Timeline` holds one device's three resources, each busy one piece of work at a time:
its compute, its uplink and its downlink (the cloud's is
:class:`~edgeloom.apps.hat.cloud.CloudSchedule`). :class:`TimedDeviceSession` charges every
device step (encode, draft, verdict, verify) its thread CPU time x ``computeSlowdown``, starting
when the device is free and, for a step that needs the cloud's states, once they have arrived;
:class:`TimedMiddle` sends each request when the device has produced it, over the uplink, to
the cloud's clock, and back over the downlink. So chunked prefill overlaps device, links and
cloud, and parallel drafting overlaps the draft with the verification, in emulated time exactly
as the decoder overlaps them in real time. A token is emitted when the step that decided it
ends (:attr:`Timeline.now` when the decoder yields it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from edgeloom.algos.hat.adapter import Adapter
from edgeloom.algos.hat.speculative import Crossing, DeviceSession, Draft, Sampling
from edgeloom.algos.hat.split import HatParts
from edgeloom.api.device import DeviceProfile
from edgeloom.apps.hat.cloud import EmulatedMiddle, Served
from edgeloom.runtime.device import compute_timer

T = TypeVar("T")


@dataclass
class Timeline:
    """One device's emulated clock, from ``now`` on."""

    profile: DeviceProfile
    now: float = 0.0
    """When the device's compute is free."""
    uplink_free: float = 0.0
    downlink_free: float = 0.0
    arrivals: dict[int, float] = field(default_factory=dict)
    """Emulated arrival of each of the cloud's replies (by the identity of its tensor)."""
    cloud_s: float = 0.0
    """Emulated cloud compute of this device's requests."""
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    device_costs: list[tuple[str, int, float]] = field(default_factory=list)
    """``(step, positions, emulated seconds)`` of each ``encode``, ``absorb`` and ``verify``."""
    cloud_costs: list[tuple[int, float, float]] = field(default_factory=list)
    """``(positions, emulated compute, emulated wait in the cloud's queue)`` per request."""

    def compute(self, measured_s: float, ready: float = 0.0) -> None:
        """A device step that took ``measured_s`` here and can start at ``ready``."""
        self.now = max(self.now, ready) + measured_s * self.profile.compute_slowdown

    def send(self, nbytes: int) -> float:
        """Send ``nbytes`` produced now; when they reach the cloud."""
        self.uplink_free = (
            max(self.now, self.uplink_free) + nbytes / self.profile.uplink_bytes_per_second
        )
        self.uplink_bytes += nbytes
        return self.uplink_free + self.profile.rtt_seconds / 2

    def receive(self, sent_at: float, nbytes: int) -> float:
        """Receive ``nbytes`` the cloud sent at ``sent_at``; when they reach the device."""
        self.downlink_free = (
            max(sent_at, self.downlink_free) + nbytes / self.profile.downlink_bytes_per_second
        )
        self.downlink_bytes += nbytes
        return self.downlink_free + self.profile.rtt_seconds / 2


@dataclass
class Emulated:
    """One request in the device's emulated time (:mod:`edgeloom.apps.hat.emulation`): when it
    started and when each token was emitted, and what its decoding cost."""

    started: float = 0.0
    emitted: list[float] = field(default_factory=list)
    chunk_size: int = 0
    """Tokens per prefill chunk the request used."""
    drafted: int = 0
    accepted: int = 0
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    cloud_compute_s: float = 0.0

    def figures(self) -> dict[str, float | int | None]:
        """TTFT and the mean time between later tokens (None for a single token), seconds."""
        first = self.emitted[0] - self.started if self.emitted else None
        gaps = len(self.emitted) - 1
        between = (self.emitted[-1] - self.emitted[0]) / gaps if gaps > 0 else None
        return {
            "ttft_s": first,
            "tbt_s": between,
            "drafted_tokens": self.drafted,
            "accepted_tokens": self.accepted,
            "uplink_bytes": self.uplink_bytes,
            "downlink_bytes": self.downlink_bytes,
            "cloud_compute_s": self.cloud_compute_s,
            "chunk_size": self.chunk_size,
        }


class TimedMiddle:
    """The cloud's middle for one sequence, each request moved through the timeline."""

    def __init__(self, inner: EmulatedMiddle, timeline: Timeline) -> None:
        self.inner, self.timeline = inner, timeline

    def submit(self, start: int, hidden: torch.Tensor) -> Future[torch.Tensor]:
        nbytes = hidden.numel() * hidden.element_size()
        arrive_at = self.timeline.send(nbytes)
        out: Future[torch.Tensor] = Future()

        def arrived(done: Future[Served]) -> None:
            try:
                served = done.result()
            except BaseException as error:  # handed to the decoder waiting on ``out``
                out.set_exception(error)
                return
            assert served.done_at is not None  # the request carried its arrival
            self.timeline.cloud_s += served.compute_s
            states = served.states
            wait = max(0.0, served.done_at - served.compute_s - arrive_at)
            self.timeline.cloud_costs.append((states.shape[1], served.compute_s, wait))
            back = states.numel() * states.element_size()
            self.timeline.arrivals[id(states)] = self.timeline.receive(served.done_at, back)
            out.set_result(states)

        self.inner.submit_at(start, hidden, arrive_at).add_done_callback(arrived)
        return out

    def answer(
        self, prompt: Sequence[int], max_new_tokens: int, eos_token_ids: Sequence[int]
    ) -> Iterator[int]:
        """The cloud's own greedy answer (``cloud-only``): the prompt's ids go up, each token
        comes down as the cloud decides it; the device only forwards them."""
        ids = torch.tensor([list(prompt)], dtype=torch.long)
        arrive_at = self.timeline.send(ids.numel() * ids.element_size())
        answer = self.inner.answer_at(ids, max_new_tokens, eos_token_ids, arrive_at).result()
        assert answer.emitted_at is not None  # the request carried its arrival
        self.timeline.cloud_s += answer.compute_s
        self.timeline.cloud_costs.append((ids.shape[1], answer.compute_s, 0.0))
        size = answer.tokens.element_size()
        for token, sent_at in zip(answer.tokens[0].tolist(), answer.emitted_at, strict=True):
            self.timeline.now = max(self.timeline.now, self.timeline.receive(sent_at, size))
            yield token


class TimedDeviceSession(DeviceSession):
    """A :class:`DeviceSession` whose every step is charged to the device's timeline."""

    def __init__(
        self,
        parts: HatParts,
        adapter: Adapter,
        sampling: Sampling,
        timeline: Timeline,
        seed: int = 0,
        crossing: Crossing = Crossing.STATES,
    ) -> None:
        super().__init__(parts, adapter, sampling, seed, crossing)
        self.timeline = timeline
        self._depth = 0  # steps call one another: only the outermost is charged

    def _timed(
        self, step: Callable[[], T], ready: float = 0.0, cost: tuple[str, int] | None = None
    ) -> T:
        if self._depth:
            return step()
        self._depth += 1
        try:
            with compute_timer() as timer:
                out = step()
        finally:
            self._depth -= 1
        self.timeline.compute(timer.seconds, ready)
        if cost is not None:
            name, positions = cost
            seconds = timer.seconds * self.timeline.profile.compute_slowdown
            self.timeline.device_costs.append((name, positions, seconds))
        return out

    def _arrival(self, middle: torch.Tensor) -> float:
        return self.timeline.arrivals.pop(id(middle), 0.0) if not self._depth else 0.0

    def encode(self, token_ids: Sequence[int]) -> torch.Tensor:
        parent = super().encode
        return self._timed(lambda: parent(token_ids), cost=("encode", len(token_ids)))

    def verdict(self, reply: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        parent = super().verdict
        cost = ("absorb", reply.shape[1])
        return self._timed(lambda: parent(reply, rows), self._arrival(reply), cost)

    def draft(self, last: int, gamma: int, stop_below: float = 0.0) -> Draft:
        parent = super().draft
        return self._timed(lambda: parent(last, gamma, stop_below))

    def extend(self, draft: Draft, count: int, stop_below: float = 0.0) -> Draft:
        parent = super().extend
        return self._timed(lambda: parent(draft, count, stop_below))

    def draft_ahead(self, draft: Draft, count: int) -> Draft:
        parent = super().draft_ahead
        return self._timed(lambda: parent(draft, count))

    def verify(
        self, draft: Draft, reply: torch.Tensor, ahead: Draft | None = None
    ) -> tuple[list[int], Draft | None]:
        parent = super().verify
        cost = ("absorb", reply.shape[1])  # verifying is mostly the output blocks on them
        return self._timed(lambda: parent(draft, reply, ahead), self._arrival(reply), cost)
