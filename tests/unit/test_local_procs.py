"""Stop signals of the local runner: SIGTERM and SIGHUP interrupt it as Ctrl-C does."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from edgeloom.local.procs import STOP_SIGNALS, interrupt_on_stop_signals


@pytest.mark.parametrize("stop", STOP_SIGNALS, ids=lambda s: s.name)
def test_stop_signal_raises_keyboard_interrupt_and_is_recorded(stop: signal.Signals) -> None:
    before = signal.getsignal(stop)

    with pytest.raises(KeyboardInterrupt), interrupt_on_stop_signals() as received:
        os.kill(os.getpid(), stop)
        time.sleep(5)  # never finishes: the handler interrupts it

    assert received == [stop]
    assert signal.getsignal(stop) is before


def test_stop_signal_in_asyncio_run_lets_the_main_task_clean_up() -> None:
    cleaned: list[str] = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0)  # a cancelled task may still await in its finally
            cleaned.append("stopped the roles")

    with pytest.raises(KeyboardInterrupt), interrupt_on_stop_signals() as received:
        asyncio.run(main())

    assert cleaned == ["stopped the roles"]
    assert received == [signal.SIGTERM]


def test_stop_signal_interrupts_even_when_sigint_is_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's Ctrl-C
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, previous)
