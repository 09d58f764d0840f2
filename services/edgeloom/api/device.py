"""Device profiles: what an emulated edge device looks like to the runtime."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from edgeloom.api.base import ApiModel


class EmulationMode(StrEnum):
    """How measured times are turned into device time.

    ``virtual`` keeps a per-worker virtual clock (measured compute x slowdown + bytes/bandwidth +
    RTT); ``sleep`` really waits the difference; ``off`` measures only.
    """

    VIRTUAL = "virtual"
    SLEEP = "sleep"
    OFF = "off"


class DeviceProfile(ApiModel):
    """Relative speed and network of one device, as emulated on uniform hardware."""

    compute_slowdown: float = Field(
        default=1.0,
        ge=1.0,
        le=1000.0,
        description="Compute time multiplier relative to the machine running the role (>= 1).",
    )
    uplink_bytes_per_second: float = Field(
        default=1.25e7, gt=0, description="Device-to-server bandwidth in bytes per second."
    )
    downlink_bytes_per_second: float = Field(
        default=1.25e7, gt=0, description="Server-to-device bandwidth in bytes per second."
    )
    rtt_seconds: float = Field(
        default=0.01, ge=0, le=10, description="Round-trip time added to every exchange, seconds."
    )
    memory_bytes: int | None = Field(
        default=None, gt=0, description="Memory available to the role, bytes (informational)."
    )
