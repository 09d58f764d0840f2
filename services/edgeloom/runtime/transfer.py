"""Chunked transfer of encoded payloads larger than the server's max_payload.

Each chunk travels as its own NATS message with headers naming the transfer, the chunk index
and count, the total size and the chunk's CRC-32. The receiver checks every header against its
limits before allocating, verifies each chunk's checksum and copies it into one preallocated
buffer; nothing is decoded before every chunk has arrived intact. Checksums and copies of large
chunks run in a worker thread (zlib and numpy release the GIL), so they overlap with the
socket I/O of the next chunk.

Partial transfers are bounded per receiver in number and in declared bytes, and a timer on the
event loop evicts those idle longer than ``stale_after_s``, so an abandoned or hostile transfer
holds its buffer for at most that long.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sized
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from edgeloom.runtime.codec import CodecError, Encoded, Limits

log = logging.getLogger(__name__)

H_TRANSFER = "Edgeloom-Transfer"
H_CHUNK = "Edgeloom-Chunk"
H_SIZE = "Edgeloom-Size"
H_CRC = "Edgeloom-Crc32"
HEADER_ALLOWANCE = 512  # bytes of max_payload left for NATS headers
CHUNK_BYTES = 1024 * 1024
"""Chunks stay this small even when the server allows more: nats-py moves 1 MiB messages
faster than 8 MiB ones (``edgeloom bench transport``), and small messages keep a slow
consumer's pending buffer small."""


class TransferError(CodecError):
    """A chunked transfer that is incomplete, out of order, oversized or corrupted."""


Publish = Callable[[bytes | memoryview, dict[str, str]], Awaitable[None]]
_THREAD_MIN_BYTES = 256 * 1024  # below this a thread hop costs more than it saves
_T = TypeVar("_T")


async def _in_thread(fn: Callable[..., _T], data: Sized, *rest: object) -> _T:
    """``fn(data, *rest)``, in a worker thread when ``data`` is large."""
    if len(data) < _THREAD_MIN_BYTES:
        return fn(data, *rest)
    return await asyncio.to_thread(fn, data, *rest)


async def send(encoded: Encoded, max_payload: int, publish: Publish) -> int:
    """Send ``encoded`` through ``publish(payload, headers)``; returns the bytes sent.

    A payload that fits in ``max_payload`` goes as one bare message; a larger one as chunks of
    at most ``CHUNK_BYTES``.
    """
    total = encoded.nbytes
    if total <= max_payload:
        await publish(encoded.tobytes(), {})
        return total
    pieces = list(encoded.chunks(min(max_payload, CHUNK_BYTES) - HEADER_ALLOWANCE))
    count = len(pieces)
    transfer = uuid.uuid4().hex
    for index, chunk in enumerate(pieces):
        crc = await _in_thread(zlib.crc32, chunk)
        await publish(
            chunk,
            {
                H_TRANSFER: transfer,
                H_CHUNK: f"{index}/{count}",
                H_SIZE: str(total),
                H_CRC: str(crc),
            },
        )
    return total


@dataclass
class _Partial:
    buffer: np.ndarray
    count: int
    touched: float
    """Event-loop time of the last chunk."""
    next_index: int = 0
    filled: int = 0


@dataclass
class Reassembler:
    """Rebuilds chunked payloads; one per subscription.

    At most ``max_partial`` transfers and ``max_partial_bytes`` declared bytes (twice
    ``limits.max_bytes`` when None) are in flight at once; a transfer that would exceed either
    is refused. A transfer idle for ``stale_after_s`` is evicted by a timer and logged under
    ``name``; its later chunks are ignored.
    """

    limits: Limits
    max_partial: int = 16
    max_partial_bytes: int | None = None
    stale_after_s: float = 60.0
    name: str = ""
    _partial: dict[str, _Partial] = field(default_factory=dict)
    _failed: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    _timer: asyncio.TimerHandle | None = None

    @property
    def partial_bytes(self) -> int:
        """Bytes held by the partial transfers now in flight."""
        return sum(len(part.buffer) for part in self._partial.values())

    async def feed(self, data: bytes, headers: dict[str, str] | None) -> bytes | np.ndarray | None:
        """Add one message; return the full payload when complete, else None.

        Raises
        ------
        TransferError
            When a chunk is malformed, out of order, too large or the checksum fails, or a new
            transfer exceeds the bounds on transfers in flight; the partial transfer is
            discarded.
        """
        if not headers or H_TRANSFER not in headers:
            if len(data) > self.limits.max_bytes:
                raise TransferError(f"message of {len(data)} bytes exceeds the limit")
            return data
        transfer = headers[H_TRANSFER]
        if transfer in self._failed:
            return None  # the rest of a transfer already rejected: one error per transfer
        try:
            return await self._feed_chunk(transfer, data, headers)
        except TransferError:
            self._partial.pop(transfer, None)
            self._failed.append(transfer)
            raise
        finally:
            self._arm_timer()

    async def _feed_chunk(
        self, transfer: str, data: bytes, headers: dict[str, str]
    ) -> np.ndarray | None:
        try:
            index, count = (int(x) for x in headers[H_CHUNK].split("/"))
            total = int(headers[H_SIZE])
            crc = int(headers[H_CRC])
        except (KeyError, ValueError):
            raise TransferError(f"transfer {transfer}: malformed chunk headers") from None
        loop = asyncio.get_running_loop()
        part = self._partial.get(transfer)
        if part is None:
            if index != 0:
                raise TransferError(f"transfer {transfer}: starts at chunk {index}, not 0")
            if not 0 < total <= self.limits.max_bytes or not 0 < count <= total:
                raise TransferError(f"transfer {transfer}: declared size {total} not allowed")
            self._evict_stale()
            if len(self._partial) >= self.max_partial:
                raise TransferError(f"transfer {transfer}: too many transfers in flight")
            budget = self.max_partial_bytes
            if budget is None:
                budget = 2 * self.limits.max_bytes
            if self.partial_bytes + total > budget:
                raise TransferError(
                    f"transfer {transfer}: {total} bytes would exceed the {budget} bytes "
                    "allowed in flight"
                )
            part = _Partial(np.empty(total, np.uint8), count, loop.time())
            self._partial[transfer] = part
        if index != part.next_index or count != part.count or total != len(part.buffer):
            raise TransferError(f"transfer {transfer}: chunk {index}/{count} out of order")
        if part.filled + len(data) > len(part.buffer):
            raise TransferError(f"transfer {transfer}: chunks exceed the declared size")
        start, part.filled = part.filled, part.filled + len(data)
        part.next_index += 1
        if not await _in_thread(_check_and_copy, data, crc, part.buffer[start : part.filled]):
            raise TransferError(
                f"transfer {transfer}: checksum mismatch in chunk {index}, payload corrupted"
            )
        part.touched = loop.time()
        if part.next_index < part.count:
            return None
        del self._partial[transfer]
        if part.filled != len(part.buffer):
            raise TransferError(f"transfer {transfer}: {part.filled} of {total} bytes arrived")
        return part.buffer

    def _arm_timer(self) -> None:
        """Schedule the next eviction when the oldest partial transfer goes stale."""
        if self._timer is None and self._partial:
            oldest = min(part.touched for part in self._partial.values())
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(oldest + self.stale_after_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._evict_stale()
        self._arm_timer()

    def _evict_stale(self) -> None:
        now = asyncio.get_running_loop().time()
        for transfer, part in list(self._partial.items()):
            if now - part.touched >= self.stale_after_s:
                del self._partial[transfer]
                self._failed.append(transfer)
                log.warning(
                    "evicted partial transfer %s on %s: %d of %d bytes, idle %.1f s",
                    transfer,
                    self.name or "?",
                    part.filled,
                    len(part.buffer),
                    now - part.touched,
                )


def _check_and_copy(data: bytes, crc: int, out: np.ndarray) -> bool:
    if zlib.crc32(data) != crc:
        return False
    out[:] = np.frombuffer(data, np.uint8)
    return True
