"""Coalesced status refreshes: however many Job events and status reports arrive for one
resource, it is refreshed at most once per interval, a few resources at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Key = tuple[str, str, str]
"""(namespace, kind, name) of a resource."""


class Refresher:
    """Runs ``refresh(key)`` in worker threads for every requested key.

    Parameters
    ----------
    refresh
        The blocking refresh of one resource.
    interval
        Seconds between rounds, so bursts of events on one resource become one refresh.
    concurrency
        Refreshes in flight at once.
    """

    def __init__(
        self, refresh: Callable[[Key], None], interval: float = 0.5, concurrency: int = 4
    ) -> None:
        self.refresh = refresh
        self.interval = interval
        self.concurrency = concurrency
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def request(self, key: Key) -> None:
        """Ask for a refresh of ``key`` (call from the event loop's thread)."""
        self._dirty.add(key)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)

        async def one(key: Key) -> None:
            async with slots:
                try:
                    await asyncio.to_thread(self.refresh, key)
                except Exception:  # one resource's trouble must not stop the others
                    log.exception("status refresh of %s %s/%s failed", key[1], key[0], key[2])

        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            await asyncio.gather(*(one(key) for key in sorted(dirty)))
            await asyncio.sleep(self.interval)
