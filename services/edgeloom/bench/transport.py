"""``edgeloom bench transport``: the bus's codec path against raw nats-py on one server.

Both methods move the same bytes through the same nats-server, publisher and subscriber on
separate connections in one event loop. ``codec`` encodes a dict of tensors, chunks it, and the
subscriber reassembles, verifies the checksum and decodes it into tensors. ``raw`` publishes
the already-encoded bytes in max_payload-sized messages with plain nats-py and the subscriber
only counts bytes. Throughput is bytes delivered per second of wall time, first publish to
last byte decoded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import nats
import torch

from edgeloom.bench.harness import Benchmark, Case, CaseResult
from edgeloom.bench.plot import MiB, grouped_bars, panels
from edgeloom.bench.registry import benchmark
from edgeloom.bench.results import BenchResult
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus
from edgeloom.runtime.codec import encode

SIZES = {"1MB": 1 * MiB, "8MB": 8 * MiB, "64MB": 64 * MiB}


def tensor_dict(nbytes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Four float32 tensors totalling ``nbytes`` (like a small model's state dict)."""
    gen = torch.Generator().manual_seed(seed)
    per = nbytes // 4 // 4
    return {f"layer{i}.weight": torch.randn(per, generator=gen) for i in range(4)}


async def _codec_throughput(url: str, tensors: dict[str, torch.Tensor], repeats: int) -> float:
    sender, receiver = await Bus.connect(url, "bench-tx"), await Bus.connect(url, "bench-rx")
    received: asyncio.Queue[int] = asyncio.Queue()

    async def on_message(message) -> None:  # type: ignore[no-untyped-def]
        received.put_nowait(sum(t.numel() * t.element_size() for t in message.tensors.values()))

    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    await receiver.subscribe("edgeloom.bench.codec", on_message)
    await receiver.nc.flush()
    start = time.perf_counter()
    for _ in range(repeats):  # one dict in flight at a time, as a training exchange has
        await sender.publish("edgeloom.bench.codec", '{"type":"bench"}', tensors)
        assert await asyncio.wait_for(received.get(), 600) == nbytes
    elapsed = time.perf_counter() - start
    await sender.drain()
    await receiver.drain()
    return repeats * nbytes / elapsed


async def _raw_throughput(url: str, payload: bytes, repeats: int) -> float:
    sender, receiver = await nats.connect(url), await nats.connect(url)
    received: asyncio.Queue[None] = asyncio.Queue()
    got = 0

    async def on_message(msg) -> None:  # type: ignore[no-untyped-def]
        nonlocal got
        got += len(msg.data)
        if got == len(payload):
            got = 0
            received.put_nowait(None)

    await receiver.subscribe(
        "edgeloom.bench.raw", cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
    )
    await receiver.flush()
    size = sender.max_payload
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    start = time.perf_counter()
    for _ in range(repeats):
        for piece in pieces:
            await sender.publish("edgeloom.bench.raw", piece)
        await asyncio.wait_for(received.get(), 600)
    elapsed = time.perf_counter() - start
    await sender.drain()
    await receiver.drain()
    return repeats * len(payload) / elapsed


async def _run_case(
    url: str, nbytes: int, repeats: int, trials: int, methods: Sequence[str]
) -> dict[str, float]:
    tensors = tensor_dict(nbytes)
    payload = encode('{"type":"bench"}', tensors).tobytes()
    throughput: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(trials):  # interleaved so both see the same machine state
        if "raw" in throughput:
            throughput["raw"].append(await _raw_throughput(url, payload, repeats))
        if "codec" in throughput:
            throughput["codec"].append(await _codec_throughput(url, tensors, repeats))
    return {m: max(values) for m, values in throughput.items()}


@benchmark("transport")
class TransportBenchmark(Benchmark[NatsServer]):
    """The bus's codec path against raw nats-py on one nats-server."""

    def cases(self) -> list[Case]:
        target_bytes = 32 * MiB if self.quick else 256 * MiB
        trials = 1 if self.quick else 3
        return [
            Case(
                name,
                {
                    "payload_bytes": nbytes,
                    "repeats": max(1, target_bytes // nbytes),
                    "trials": trials,
                },
            )
            for name, nbytes in SIZES.items()
        ]

    def methods(self) -> list[str]:
        return ["codec", "raw"]

    def session(self) -> AbstractContextManager[NatsServer]:
        return NatsServer()

    def run_case(self, case: Case, methods: Sequence[str], session: NatsServer) -> CaseResult:
        p = case.params
        best = asyncio.run(
            _run_case(session.url, p["payload_bytes"], p["repeats"], p["trials"], methods)
        )
        return CaseResult(
            {m: {"throughput_bytes_per_s": round(v, 1)} for m, v in best.items()},
            params={"max_payload_bytes": session.max_payload},
        )

    def plot(self, result: BenchResult, path: Path) -> None:
        methods = [m for m in ("raw", "codec") if m in result.cases[0]["results"]]
        bars = {
            m: [c["results"][m]["throughput_bytes_per_s"] / MiB for c in result.cases]
            for m in methods
        }
        with panels(path, 1, (6, 3.5)) as (ax,):
            tops = grouped_bars(ax, [c["case"] for c in result.cases], bars)
            if methods == ["raw", "codec"]:
                for (x, top), raw in zip(tops, bars["raw"], strict=True):
                    ax.annotate(
                        f"codec/raw {top / raw:.0%}",
                        (x, top),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        fontsize=8,
                    )
            ax.set_ylabel("throughput (MiB/s)")
            ax.set_title("tensor dicts through NATS: codec vs raw nats-py")
