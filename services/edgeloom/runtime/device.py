"""Device emulation: turn measured (or modelled) compute and bytes moved into device time.

``virtual``: a per-role virtual clock advances by measured compute x slowdown + bytes/bandwidth
+ RTT, and nothing waits. ``modelled``: the same, with compute from the model's FLOPs
(:class:`ComputeCost`) at :data:`REFERENCE_FLOPS_PER_SECOND` instead of measured CPU time, so
two runs of one file and seed keep the same clocks. ``sleep``: the measured amounts are really
waited (minus what was already spent computing). ``off``: only measured wall times count;
profiles are ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgeloom.api.device import DeviceProfile, EmulationMode

REFERENCE_FLOPS_PER_SECOND = 1e10
"""The machine a ``modelled`` compute time refers to: 10 GFLOP/s, one modern CPU core running
small convolutions; a device profile's ``computeSlowdown`` scales it."""


def reference_seconds(mode: EmulationMode, measured_s: float, modelled_s: float) -> float:
    """Unscaled compute time of one piece of work: modelled in ``modelled`` mode, else
    measured."""
    return modelled_s if mode is EmulationMode.MODELLED else measured_s


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

    def compute_seconds(self, measured_s: float, modelled_s: float) -> float:
        """Device compute time for work that took ``measured_s`` here and costs
        ``modelled_s`` on the reference machine (:meth:`ComputeCost.seconds`)."""
        if self.mode is EmulationMode.OFF:
            return measured_s
        return reference_seconds(self.mode, measured_s, modelled_s) * self.profile.compute_slowdown

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


@dataclass(frozen=True)
class ComputeCost:
    """Floating-point operations per sample of one module's forward and backward pass.

    Counted once by torch's ``FlopCounterMode`` on a batch of one zero sample (matrix products
    and convolutions; element-wise ops count 0), so a modelled compute time is a pure function
    of the model and the batch size: ``batch * (forward + backward) / flops_per_second``. The
    counts are linear in the batch for the block CNNs of :mod:`edgeloom.models.split_cnn`.
    """

    forward: int
    backward: int

    @classmethod
    def of(
        cls, module: nn.Module, sample_shape: tuple[int, ...], input_grad: bool = False
    ) -> ComputeCost:
        """Count ``module``'s FLOPs for one sample of ``sample_shape`` (no batch dimension).

        The backward pass computes the parameters' gradients, and the input's with
        ``input_grad`` (a server's top model returns it to the workers); nothing is
        accumulated into ``.grad``, no RNG is drawn (the module is counted in eval mode) and
        its train/eval mode is restored.
        """
        was_training = module.training
        module.eval()
        params = [p for p in module.parameters() if p.requires_grad]
        device = params[0].device if params else None
        try:
            sample = torch.zeros((1, *sample_shape), device=device, requires_grad=input_grad)
            with FlopCounterMode(display=False) as counter:
                out = module(sample)
            forward = int(counter.get_total_flops())
            wrt = [*params, sample] if input_grad else params
            with FlopCounterMode(display=False) as counter:
                if wrt:
                    torch.autograd.grad(out.sum(), wrt)
            backward = int(counter.get_total_flops())
        finally:
            module.train(was_training)
        return cls(forward, backward)

    def seconds(self, samples: int, forward: bool = True, backward: bool = True) -> float:
        """Modelled time of the passes of ``samples`` samples on the reference machine."""
        flops = (self.forward if forward else 0) + (self.backward if backward else 0)
        return samples * flops / REFERENCE_FLOPS_PER_SECOND
