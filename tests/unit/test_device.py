"""Device emulation: virtual clock arithmetic, off mode, sleep mode and the CPU-time stopwatch."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from edgeloom.api.device import DeviceProfile, EmulationMode
from edgeloom.runtime import device
from edgeloom.runtime.device import DeviceClock, compute_timer

PROFILE = DeviceProfile(
    compute_slowdown=4.0,
    uplink_bytes_per_second=2.0e6,
    downlink_bytes_per_second=8.0e6,
    rtt_seconds=0.02,
)


def test_virtual_compute_is_measured_time_times_slowdown() -> None:
    clock = DeviceClock(PROFILE)

    assert clock.compute_seconds(0.25, 9.0) == pytest.approx(1.0)


def test_modelled_compute_is_the_modelled_time_times_slowdown() -> None:
    clock = DeviceClock(PROFILE, EmulationMode.MODELLED)

    assert clock.compute_seconds(0.25, 0.5) == pytest.approx(2.0)
    assert clock.upload_seconds(1_000_000) == DeviceClock(PROFILE).upload_seconds(1_000_000)


def test_virtual_upload_is_bytes_over_uplink_plus_half_rtt() -> None:
    clock = DeviceClock(PROFILE)

    assert clock.upload_seconds(1_000_000) == pytest.approx(0.5 + 0.01)


def test_virtual_download_is_bytes_over_downlink_plus_half_rtt() -> None:
    clock = DeviceClock(PROFILE)

    assert clock.download_seconds(1_000_000) == pytest.approx(0.125 + 0.01)


def test_zero_bytes_still_cost_half_an_rtt() -> None:
    clock = DeviceClock(PROFILE)

    assert clock.upload_seconds(0) == pytest.approx(0.01)
    assert clock.download_seconds(0) == pytest.approx(0.01)


def test_sleep_mode_uses_the_same_arithmetic_as_virtual() -> None:
    virtual, sleep = DeviceClock(PROFILE), DeviceClock(PROFILE, EmulationMode.SLEEP)

    assert sleep.compute_seconds(0.3, 9.0) == virtual.compute_seconds(0.3, 9.0)
    assert sleep.upload_seconds(12345) == virtual.upload_seconds(12345)
    assert sleep.download_seconds(12345) == virtual.download_seconds(12345)


def test_off_mode_ignores_the_profile() -> None:
    clock = DeviceClock(PROFILE, EmulationMode.OFF)

    assert clock.compute_seconds(0.25, 9.0) == 0.25
    assert clock.upload_seconds(10**9) == 0.0
    assert clock.download_seconds(10**9) == 0.0


async def test_spend_advances_now_and_returns_the_amount() -> None:
    clock = DeviceClock(PROFILE)

    first = await clock.spend(clock.compute_seconds(0.25, 9.0))
    await clock.spend(clock.upload_seconds(1_000_000))

    assert first == pytest.approx(1.0)
    assert clock.now == pytest.approx(1.0 + 0.51)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the waits spend() asks for instead of waiting."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(device, "asyncio", SimpleNamespace(sleep=fake_sleep))
    return recorded


@pytest.mark.parametrize("mode", [EmulationMode.VIRTUAL, EmulationMode.OFF])
async def test_only_sleep_mode_waits(sleeps: list[float], mode: EmulationMode) -> None:
    clock = DeviceClock(PROFILE, mode)

    await clock.spend(3600.0)

    assert clock.now == 3600.0
    assert sleeps == []


async def test_sleep_mode_asks_to_wait_for_the_part_not_already_spent(sleeps: list[float]) -> None:
    clock = DeviceClock(PROFILE, EmulationMode.SLEEP)

    await clock.spend(0.25, already_waited_s=0.1)
    await clock.spend(0.1, already_waited_s=3600.0)

    assert sleeps == [pytest.approx(0.15)]
    assert clock.now == pytest.approx(0.35)


async def test_sleep_mode_really_waits() -> None:
    clock = DeviceClock(PROFILE, EmulationMode.SLEEP)
    start = time.monotonic()

    await clock.spend(0.25, already_waited_s=0.1)

    assert time.monotonic() - start >= 0.15 * 0.9
    assert clock.now == pytest.approx(0.25)


def _busy(seconds: float) -> int:
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        n += 1
    return n


def test_compute_timer_counts_cpu_work() -> None:
    with compute_timer() as timer:
        _busy(0.05)

    assert timer.seconds > 0


def test_compute_timer_does_not_count_sleeping() -> None:
    with compute_timer() as timer:
        time.sleep(0.2)

    assert timer.seconds < 0.1


def test_compute_timer_records_time_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), compute_timer() as timer:
        _busy(0.02)
        raise RuntimeError("boom")

    assert timer.seconds > 0
