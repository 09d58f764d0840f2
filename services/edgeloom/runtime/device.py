"""Device emulation: turn measured compute and bytes moved into device time.

``virtual``: a per-role virtual clock advances by measured compute x slowdown + bytes/bandwidth
+ RTT, and nothing waits. ``sleep``: the same amounts are really waited (minus what was already
spent computing). ``off``: only measured wall times count; profiles are ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edgeloom.api.device import DeviceProfile, EmulationMode


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextmanager
def compute_timer() -> Iterator[Stopwatch]:
    """CPU time of the calling thread over a block: ``with compute_timer() as t: ...``.

    CPU time rather than wall time, so that emulated devices sharing a few cores (ten workers on
    a laptop) are not charged for each other's work; run torch with one intra-op thread.
    """
    sw = Stopwatch()
    start = time.thread_time()
    try:
        yield sw
    finally:
        sw.seconds = time.thread_time() - start


@dataclass
class DeviceClock:
    """The emulated clock of one device."""

    profile: DeviceProfile
    mode: EmulationMode = EmulationMode.VIRTUAL
    now: float = 0.0

    def compute_seconds(self, measured_s: float) -> float:
        """Device compute time for work that took ``measured_s`` here."""
        if self.mode is EmulationMode.OFF:
            return measured_s
        return measured_s * self.profile.compute_slowdown

    def upload_seconds(self, nbytes: int) -> float:
        """Device-to-server transfer time of ``nbytes`` (half an RTT of latency)."""
        if self.mode is EmulationMode.OFF:
            return 0.0
        return nbytes / self.profile.uplink_bytes_per_second + self.profile.rtt_seconds / 2

    def download_seconds(self, nbytes: int) -> float:
        """Server-to-device transfer time of ``nbytes`` (half an RTT of latency)."""
        if self.mode is EmulationMode.OFF:
            return 0.0
        return nbytes / self.profile.downlink_bytes_per_second + self.profile.rtt_seconds / 2

    async def spend(self, device_s: float, already_waited_s: float = 0.0) -> float:
        """Advance the clock by ``device_s``; in sleep mode wait for the part not yet spent."""
        self.now += device_s
        if self.mode is EmulationMode.SLEEP and device_s > already_waited_s:
            await asyncio.sleep(device_s - already_waited_s)
        return device_s
