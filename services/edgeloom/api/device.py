"""Device profiles: what an emulated edge device looks like to the runtime."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from edgeloom.api.base import SpecModel


class EmulationMode(StrEnum):
    """How measured times are turned into device time.

    ``virtual`` keeps a per-worker virtual clock (measured compute x slowdown + bytes/bandwidth +
    RTT); ``modelled`` is ``virtual`` with compute from the model's FLOPs instead of measured
    time, so runs repeat exactly; ``sleep`` really waits the difference; ``off`` measures only.
    """

    VIRTUAL = "virtual"
    MODELLED = "modelled"
    SLEEP = "sleep"
    OFF = "off"


MAX_BYTES_PER_SECOND = 1e12
"""1 TB/s (8 Tbit/s): above any link an edge device has; bounds the emulated transfer times."""
MAX_MEMORY_BYTES = 2**50
"""1 PiB, far above any device's memory, and an exact integer in JSON (below 2**53)."""


DeviceProfileLabel = Annotated[
    str | None,
    Field(
        default=None,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Value of the edgeloom.io/device-profile node label to schedule onto.",
    ),
]
"""A group's node placement: a Kubernetes label value (every kind with device groups)."""


class DeviceProfile(SpecModel):
    """Relative speed and network of one device, as emulated on uniform hardware."""

    compute_slowdown: float = Field(
        default=1.0,
        ge=1.0,
        le=1000.0,
        description="Compute time multiplier relative to the machine running the role (>= 1).",
    )
    uplink_bytes_per_second: float = Field(
        default=1.25e7,
        gt=0,
        le=MAX_BYTES_PER_SECOND,
        description="Device-to-server bandwidth in bytes per second.",
    )
    downlink_bytes_per_second: float = Field(
        default=1.25e7,
        gt=0,
        le=MAX_BYTES_PER_SECOND,
        description="Server-to-device bandwidth in bytes per second.",
    )
    rtt_seconds: float = Field(
        default=0.01, ge=0, le=10, description="Round-trip time added to every exchange, seconds."
    )
    memory_bytes: int | None = Field(
        default=None,
        gt=0,
        le=MAX_MEMORY_BYTES,
        description="Memory available to the role, bytes (informational).",
    )
