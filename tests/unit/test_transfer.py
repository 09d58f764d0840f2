"""Chunked transfer: send() through an in-memory publisher, Reassembler.feed() on the other side."""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloom.runtime.codec import CodecError, Encoded, Limits, decode, encode
from edgeloom.runtime.transfer import (
    H_CHUNK,
    H_CRC,
    H_SIZE,
    H_TRANSFER,
    HEADER_ALLOWANCE,
    Reassembler,
    TransferError,
    send,
)

ENVELOPE = json.dumps({"type": "gradients"})
MAX_PAYLOAD = HEADER_ALLOWANCE + 1000  # chunks of at most 1000 bytes


@dataclass
class Recorder:
    """An async publish function that keeps every (payload, headers) it is given."""

    messages: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, payload: bytes | memoryview, headers: dict[str, str]) -> None:
        self.messages.append((bytes(payload), dict(headers)))


def payload_of(nbytes: int, seed: int = 0) -> tuple[Encoded, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        "x": torch.randint(0, 256, (nbytes,), generator=gen, dtype=torch.uint8),
        "w": torch.randn(3, 4, generator=gen),
    }
    return encode(ENVELOPE, tensors), tensors


async def sent(encoded: Encoded, max_payload: int = MAX_PAYLOAD) -> list[tuple[bytes, dict]]:
    recorder = Recorder()
    total = await send(encoded, max_payload, recorder)
    assert total == encoded.nbytes
    return recorder.messages


async def feed_all(
    reassembler: Reassembler, messages: list[tuple[bytes, dict[str, str]]]
) -> list[bytes | np.ndarray | None]:
    return [await reassembler.feed(data, headers) for data, headers in messages]


def with_headers(message: tuple[bytes, dict[str, str]], **changes: str) -> tuple[bytes, dict]:
    data, headers = message
    return data, {**headers, **changes}


@pytest.fixture
def reassembler() -> Reassembler:
    return Reassembler(Limits(max_bytes=1024 * 1024))


# --- the happy paths ----------------------------------------------------------------------------


async def test_payload_that_fits_goes_as_one_bare_message(reassembler: Reassembler) -> None:
    encoded, tensors = payload_of(100)

    messages = await sent(encoded, max_payload=encoded.nbytes)

    assert messages == [(encoded.tobytes(), {})]
    whole = await reassembler.feed(*messages[0])
    _, decoded = decode(whole)
    assert torch.equal(decoded["x"], tensors["x"])


async def test_large_payload_goes_as_chunks_with_transfer_headers() -> None:
    encoded, _ = payload_of(5000)

    messages = await sent(encoded)

    count = len(messages)
    assert count >= 5
    transfers = {headers[H_TRANSFER] for _, headers in messages}
    assert len(transfers) == 1
    for index, (data, headers) in enumerate(messages):
        assert headers[H_CHUNK] == f"{index}/{count}"
        assert headers[H_SIZE] == str(encoded.nbytes)
        assert headers[H_CRC] == str(zlib.crc32(data))
        assert 0 < len(data) <= MAX_PAYLOAD - HEADER_ALLOWANCE
    assert b"".join(data for data, _ in messages) == encoded.tobytes()


async def test_chunks_reassemble_into_the_original_tensors(reassembler: Reassembler) -> None:
    encoded, tensors = payload_of(5000)

    results = await feed_all(reassembler, await sent(encoded))

    assert all(r is None for r in results[:-1])
    envelope, decoded = decode(results[-1])
    assert envelope == ENVELOPE
    assert torch.equal(decoded["x"], tensors["x"])
    assert torch.equal(decoded["w"], tensors["w"])


async def test_chunks_above_the_thread_threshold_reassemble(reassembler: Reassembler) -> None:
    encoded, tensors = payload_of(700 * 1024)  # 300 KiB chunks: checksums run in a thread

    results = await feed_all(reassembler, await sent(encoded, 300 * 1024 + HEADER_ALLOWANCE))

    _, decoded = decode(results[-1])
    assert torch.equal(decoded["x"], tensors["x"])


async def test_interleaved_transfers_reassemble_independently(reassembler: Reassembler) -> None:
    first, first_tensors = payload_of(3000, seed=1)
    second, second_tensors = payload_of(2500, seed=2)
    a, b = await sent(first), await sent(second)
    interleaved = [m for pair in zip(a, b, strict=False) for m in pair] + a[len(b) :] + b[len(a) :]

    results = [r for r in await feed_all(reassembler, interleaved) if r is not None]

    assert len(results) == 2
    decoded = sorted((decode(r)[1] for r in results), key=lambda t: t["x"].numel())
    assert torch.equal(decoded[0]["x"], second_tensors["x"])
    assert torch.equal(decoded[1]["x"], first_tensors["x"])


@settings(max_examples=100, deadline=None)
@given(
    nbytes=st.integers(0, 20_000),
    chunk=st.integers(64, 6_000),
    seed=st.integers(0, 2**16),
)
async def test_random_sizes_round_trip(nbytes: int, chunk: int, seed: int) -> None:
    encoded, tensors = payload_of(nbytes, seed)
    reassembler = Reassembler(Limits(max_bytes=64 * 1024))

    messages = await sent(encoded, HEADER_ALLOWANCE + chunk)
    results = await feed_all(reassembler, messages)

    assert all(r is None for r in results[:-1])
    _, decoded = decode(results[-1])
    assert torch.equal(decoded["x"], tensors["x"])
    assert torch.equal(decoded["w"], tensors["w"])
    assert (len(messages) == 1) == (encoded.nbytes <= HEADER_ALLOWANCE + chunk)


# --- one error per bad transfer -----------------------------------------------------------------


async def test_corrupted_chunk_names_the_chunk_and_later_chunks_are_ignored(
    reassembler: Reassembler,
) -> None:
    encoded, _ = payload_of(5000)
    messages = await sent(encoded)
    data, headers = messages[2]
    messages[2] = (bytes([data[0] ^ 0xFF]) + data[1:], headers)

    assert await feed_all(reassembler, messages[:2]) == [None, None]
    with pytest.raises(TransferError, match="checksum mismatch in chunk 2"):
        await reassembler.feed(*messages[2])
    assert await feed_all(reassembler, messages[3:]) == [None] * len(messages[3:])


async def test_good_transfer_reassembles_after_a_bad_one(reassembler: Reassembler) -> None:
    bad, _ = payload_of(3000, seed=1)
    bad_messages = await sent(bad)
    bad_messages[0] = with_headers(bad_messages[0], **{H_CRC: "1"})
    with pytest.raises(TransferError):
        await feed_all(reassembler, bad_messages)

    good, tensors = payload_of(3000, seed=2)
    results = await feed_all(reassembler, await sent(good))

    _, decoded = decode(results[-1])
    assert torch.equal(decoded["x"], tensors["x"])


async def test_out_of_order_chunk_is_refused(reassembler: Reassembler) -> None:
    messages = await sent(payload_of(5000)[0])

    await reassembler.feed(*messages[0])
    with pytest.raises(TransferError, match=r"chunk 2/\d+ out of order"):
        await reassembler.feed(*messages[2])


async def test_repeated_chunk_is_refused(reassembler: Reassembler) -> None:
    messages = await sent(payload_of(5000)[0])

    await reassembler.feed(*messages[0])
    with pytest.raises(TransferError, match="out of order"):
        await reassembler.feed(*messages[0])


async def test_transfer_starting_after_chunk_zero_is_refused(reassembler: Reassembler) -> None:
    messages = await sent(payload_of(5000)[0])

    with pytest.raises(TransferError, match="starts at chunk 1, not 0"):
        await reassembler.feed(*messages[1])


async def test_chunk_changing_the_declared_count_is_refused(reassembler: Reassembler) -> None:
    messages = await sent(payload_of(5000)[0])
    count = len(messages)

    await reassembler.feed(*messages[0])
    with pytest.raises(TransferError, match="out of order"):
        await reassembler.feed(*with_headers(messages[1], **{H_CHUNK: f"1/{count + 1}"}))


async def test_declared_size_above_the_limit_is_refused_before_allocating() -> None:
    reassembler = Reassembler(Limits(max_bytes=1000))
    huge = str(2**62)  # np.empty of this would raise MemoryError, not TransferError

    with pytest.raises(TransferError, match=f"declared size {huge} not allowed"):
        await reassembler.feed(b"abc", {H_TRANSFER: "t1", H_CHUNK: "0/2", H_SIZE: huge, H_CRC: "0"})


@pytest.mark.parametrize(
    "chunk, size",
    [("0/2", "0"), ("0/2", "-5"), ("0/0", "10"), ("0/11", "10")],
    ids=["zero-size", "negative-size", "zero-count", "more-chunks-than-bytes"],
)
async def test_impossible_size_or_count_is_refused(
    reassembler: Reassembler, chunk: str, size: str
) -> None:
    with pytest.raises(TransferError, match="not allowed"):
        await reassembler.feed(b"abc", {H_TRANSFER: "t1", H_CHUNK: chunk, H_SIZE: size, H_CRC: "0"})


async def test_chunks_exceeding_the_declared_size_are_refused(reassembler: Reassembler) -> None:
    data = b"0123456789"
    headers = {H_TRANSFER: "t1", H_CHUNK: "0/2", H_SIZE: "8", H_CRC: str(zlib.crc32(data))}

    with pytest.raises(TransferError, match="exceed the declared size"):
        await reassembler.feed(data, headers)


async def test_chunks_short_of_the_declared_size_are_refused(reassembler: Reassembler) -> None:
    def chunk(index: int, data: bytes) -> tuple[bytes, dict[str, str]]:
        return data, {
            H_TRANSFER: "t1",
            H_CHUNK: f"{index}/2",
            H_SIZE: "10",
            H_CRC: str(zlib.crc32(data)),
        }

    assert await reassembler.feed(*chunk(0, b"abc")) is None
    with pytest.raises(TransferError, match="6 of 10 bytes arrived"):
        await reassembler.feed(*chunk(1, b"def"))


async def test_too_many_partial_transfers_are_refused() -> None:
    reassembler = Reassembler(Limits(max_bytes=1024 * 1024), max_partial=2)
    first_chunks = [(await sent(payload_of(3000, seed=i)[0]))[0] for i in range(3)]

    assert await feed_all(reassembler, first_chunks[:2]) == [None, None]
    with pytest.raises(TransferError, match="too many transfers in flight"):
        await reassembler.feed(*first_chunks[2])


async def test_stale_partial_transfers_make_room_for_new_ones() -> None:
    reassembler = Reassembler(Limits(max_bytes=1024 * 1024), max_partial=1, stale_after_s=0.05)
    abandoned = await sent(payload_of(3000, seed=1)[0])
    encoded, tensors = payload_of(3000, seed=2)

    await reassembler.feed(*abandoned[0])
    await asyncio.sleep(0.1)
    results = await feed_all(reassembler, await sent(encoded))

    _, decoded = decode(results[-1])
    assert torch.equal(decoded["x"], tensors["x"])


async def test_partial_transfers_beyond_the_byte_budget_are_refused() -> None:
    first, second = [await sent(payload_of(3000, seed=i)[0]) for i in range(2)]
    nbytes = int(first[0][1][H_SIZE])
    reassembler = Reassembler(Limits(max_bytes=nbytes), max_partial_bytes=nbytes + 100)

    await reassembler.feed(*first[0])
    with pytest.raises(TransferError, match=f"{nbytes} bytes would exceed the {nbytes + 100}"):
        await reassembler.feed(*second[0])
    assert reassembler.partial_bytes == nbytes


async def test_byte_budget_defaults_to_twice_the_message_limit() -> None:
    transfers = [await sent(payload_of(3000, seed=i)[0]) for i in range(3)]
    nbytes = int(transfers[0][0][1][H_SIZE])
    reassembler = Reassembler(Limits(max_bytes=nbytes + 10))

    assert await feed_all(reassembler, [t[0] for t in transfers[:2]]) == [None, None]
    with pytest.raises(TransferError, match="would exceed"):
        await reassembler.feed(*transfers[2][0])


async def test_finished_transfer_frees_its_share_of_the_byte_budget() -> None:
    first, second = [await sent(payload_of(3000, seed=i)[0]) for i in range(2)]
    nbytes = int(first[0][1][H_SIZE])
    reassembler = Reassembler(Limits(max_bytes=nbytes), max_partial_bytes=nbytes)

    results = await feed_all(reassembler, first + second)

    assert results[len(first) - 1] is not None and results[-1] is not None
    assert reassembler.partial_bytes == 0


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the event loop until it holds or ``timeout_s`` passes."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_idle_partial_transfer_is_evicted_by_the_timer_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reassembler = Reassembler(Limits(max_bytes=1024 * 1024), stale_after_s=0.05, name="subj.a")
    messages = await sent(payload_of(3000)[0])
    caplog.set_level(logging.WARNING, logger="edgeloom.runtime.transfer")

    await feed_all(reassembler, messages[:2])
    await wait_until(lambda: reassembler.partial_bytes == 0)

    transfer, arrived = messages[0][1][H_TRANSFER], len(messages[0][0]) + len(messages[1][0])
    assert f"evicted partial transfer {transfer} on subj.a: {arrived} of" in caplog.text
    assert await feed_all(reassembler, messages[2:]) == [None] * len(messages[2:])


async def test_eviction_timer_rearms_for_later_transfers() -> None:
    reassembler = Reassembler(Limits(max_bytes=1024 * 1024), stale_after_s=0.05)
    for seed in range(2):
        await reassembler.feed(*(await sent(payload_of(3000, seed=seed)[0]))[0])
        assert reassembler.partial_bytes > 0

        await wait_until(lambda: reassembler.partial_bytes == 0)


@pytest.mark.parametrize(
    "changes",
    [
        {H_CHUNK: "zero/2"},
        {H_CHUNK: "0"},
        {H_CHUNK: "0/2/3"},
        {H_SIZE: "big"},
        {H_CRC: ""},
        {H_SIZE: "1.5"},
    ],
    ids=[
        "chunk-word",
        "chunk-no-count",
        "chunk-three-parts",
        "size-word",
        "crc-empty",
        "size-float",
    ],
)
async def test_malformed_chunk_headers_are_refused(
    reassembler: Reassembler, changes: dict[str, str]
) -> None:
    headers = {H_TRANSFER: "t1", H_CHUNK: "0/2", H_SIZE: "10", H_CRC: "0", **changes}

    with pytest.raises(TransferError, match="malformed chunk headers"):
        await reassembler.feed(b"abc", headers)


@pytest.mark.parametrize("missing", [H_CHUNK, H_SIZE, H_CRC])
async def test_chunk_missing_a_header_is_refused(reassembler: Reassembler, missing: str) -> None:
    headers = {H_TRANSFER: "t1", H_CHUNK: "0/2", H_SIZE: "10", H_CRC: "0"}
    del headers[missing]

    with pytest.raises(TransferError, match="malformed chunk headers"):
        await reassembler.feed(b"abc", headers)


async def test_bare_message_above_the_limit_is_refused() -> None:
    reassembler = Reassembler(Limits(max_bytes=10))

    assert await reassembler.feed(b"x" * 10, None) == b"x" * 10
    with pytest.raises(TransferError, match="11 bytes exceeds the limit"):
        await reassembler.feed(b"x" * 11, {})


def test_transfer_errors_are_caught_as_codec_errors() -> None:
    assert issubclass(TransferError, CodecError)
