"""HAT's emulated time: the device's links and the cloud's queue by the numbers, decoding on the
emulated clock still giving the full model's greedy output (HAT and the baselines where tokens
cross), a token per round trip without speculation, and the adaptive chunk size following the
prefill model of what was measured."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec
from edgeloom.algos.hat.chunking import LinearCost, PrefillModel
from edgeloom.algos.hat.split import HatParts, HatSplit
from edgeloom.api.device import DeviceProfile
from edgeloom.api.kinds.hatinferenceservice import ServingMethod
from edgeloom.apps.hat.chunks import ChunkPlanner
from edgeloom.apps.hat.cloud import CloudSchedule, CloudSessions, LocalCloud, SessionError
from edgeloom.apps.hat.emulation import Emulated, Timeline
from edgeloom.apps.hat.endpoint import DeviceEngine, ServingSettings
from edgeloom_testkit.tiny_llms import greedy_tokens, tiny_llama, token_batch

LINK = DeviceProfile(
    compute_slowdown=2.0,
    uplink_bytes_per_second=1e5,
    downlink_bytes_per_second=1e6,
    rtt_seconds=0.04,
)


def test_the_links_serialise_their_transfers_and_add_half_an_rtt_each_way() -> None:
    timeline = Timeline(LINK, now=1.0)
    assert timeline.send(10_000) == pytest.approx(1.0 + 0.1 + 0.02)
    assert timeline.send(10_000) == pytest.approx(1.0 + 0.2 + 0.02)  # behind the first
    assert timeline.receive(3.0, 100_000) == pytest.approx(3.0 + 0.1 + 0.02)
    timeline.compute(0.5, ready=2.0)  # waits for what it needs, then runs 2x slower
    assert timeline.now == pytest.approx(3.0)
    assert (timeline.uplink_bytes, timeline.downlink_bytes) == (20_000, 100_000)


def test_the_cloud_serves_one_request_at_a_time_at_its_own_speed() -> None:
    cloud = CloudSchedule(compute_factor=0.5)
    assert cloud.serve(1.0, 0.4) == pytest.approx(1.2)
    assert cloud.serve(1.1, 0.4) == pytest.approx(1.4)  # queued behind the first
    assert cloud.serve(5.0, 0.2) == pytest.approx(5.1)


@pytest.fixture(scope="module")
def parts() -> tuple[Any, HatParts, Adapter]:
    model = tiny_llama(layers=5)
    parts = HatParts(model, HatSplit(1, 1))
    return model, parts, Adapter(parts, AdapterSpec("decoder")).eval()


def engine(parts: tuple[Any, HatParts, Adapter], **settings: Any) -> DeviceEngine:
    _, split, adapter = parts
    whole = settings.get("method") in (ServingMethod.SD_TOKENS, ServingMethod.CLOUD_ONLY)
    cloud = LocalCloud(CloudSessions(split, schedule=CloudSchedule(0.5), whole=whole))
    tokenizer: Any = SimpleNamespace(eos_token_id=None)
    serving = ServingSettings("m", **settings)
    return DeviceEngine(split, adapter, tokenizer, cloud, serving, profile=LINK)


@pytest.mark.parametrize(
    "settings",
    [{}, {"chunk_size": None}, {"parallel_drafting": False}, {"adaptive_chunking": True}],
    ids=["hat", "no-chunking", "no-parallel", "adaptive-chunks"],
)
def test_emulated_decoding_is_the_full_models_and_its_clock_only_moves_on(
    parts: tuple[Any, HatParts, Adapter], settings: dict[str, Any]
) -> None:
    model = parts[0]
    device = engine(parts, **{"chunk_size": 4, **settings})
    for seed in (1, 2):  # the second request starts where the first ended
        prompt = token_batch(batch=1, length=11, seed=seed)["input_ids"][0].tolist()
        emulated = Emulated()
        tokens = list(device.tokens(prompt, 12, 0.0, 0, f"s{seed}", emulated))
        assert tokens == greedy_tokens(model, prompt, 12)
        times = emulated.emitted
        assert len(times) == 12 and times == sorted(times)
        assert times[0] - emulated.started >= LINK.rtt_seconds  # at least one round trip
        figures = emulated.figures()
        assert figures["uplink_bytes"] == figures["downlink_bytes"] > 0
        assert emulated.cloud_compute_s > 0
        assert device.clock == pytest.approx(times[-1])


def test_without_speculation_every_token_costs_a_round_trip(
    parts: tuple[Any, HatParts, Adapter],
) -> None:
    device = engine(parts, gamma_min=0, gamma_initial=0, gamma_max=0)
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()
    emulated = Emulated()
    tokens = list(device.tokens(prompt, 8, 0.0, 0, "u", emulated))
    assert tokens == greedy_tokens(parts[0], prompt, 8)
    gaps = [b - a for a, b in zip(emulated.emitted, emulated.emitted[1:], strict=False)]
    assert min(gaps) >= LINK.rtt_seconds and emulated.drafted == 0


def test_the_adaptive_chunk_size_is_the_prefill_models_choice_once_costs_are_known() -> None:
    planner = ChunkPlanner(LINK, bytes_per_token=256, first_guess=64)
    assert planner.chunk(1000) == 64
    timeline = Timeline(LINK)
    timeline.device_costs += [("encode", 32, 0.004), ("encode", 128, 0.010)]
    timeline.device_costs += [("absorb", 1, 0.001), ("absorb", 128, 0.008)]
    timeline.cloud_costs += [(8, 0.002, 0.0), (128, 0.012, 0.012)]  # waited as long as it ran
    planner.observe(timeline)
    expected = PrefillModel(
        LinearCost.fit([32, 128], [0.004, 0.010]) + LinearCost.fit([1, 128], [0.001, 0.008]),
        LinearCost.fit([8, 128], [0.002, 0.012]),
        256,
        LINK.uplink_bytes_per_second,
        LINK.downlink_bytes_per_second,
        LINK.rtt_seconds,
        cloud_queue=planner.queue.value or 0.0,
    )
    assert 0 < (planner.queue.value or 0) <= 1
    for prompt in (40, 300, 1000):
        assert planner.chunk(prompt) == expected.best_chunk(prompt)


@pytest.mark.parametrize("method", [ServingMethod.SD_TOKENS, ServingMethod.CLOUD_ONLY])
def test_the_baselines_where_tokens_cross_decode_the_full_models_greedy_output(
    parts: tuple[Any, HatParts, Adapter], method: ServingMethod
) -> None:
    device = engine(parts, method=method, chunk_size=None)
    prompt = token_batch(batch=1, length=9, seed=3)["input_ids"][0].tolist()
    emulated = Emulated()
    tokens = list(device.tokens(prompt, 10, 0.0, 0, "t", emulated))
    assert tokens == greedy_tokens(parts[0], prompt, 10)
    assert emulated.emitted == sorted(emulated.emitted) and len(emulated.emitted) == 10
    assert emulated.emitted[0] - emulated.started >= LINK.rtt_seconds
    figures = emulated.figures()
    if method == ServingMethod.CLOUD_ONLY:  # the prompt's ids up, the new ones down
        assert (figures["uplink_bytes"], figures["downlink_bytes"]) == (9 * 8, 10 * 8)
        assert emulated.drafted == 0
    else:  # ids both ways, one per position sent
        assert figures["uplink_bytes"] == figures["downlink_bytes"] > 0
        assert figures["uplink_bytes"] % 8 == 0 and emulated.drafted > 0
    assert emulated.cloud_compute_s > 0
    assert not device.cloud.sessions.sessions or method == ServingMethod.SD_TOKENS


def test_a_whole_model_cloud_refuses_what_is_not_token_ids(
    parts: tuple[Any, HatParts, Adapter],
) -> None:
    import torch

    sessions = CloudSessions(parts[1], whole=True)
    vocab = parts[1].view.config.vocab_size
    with pytest.raises(SessionError, match=r"must be torch\.int64"):
        sessions.middle("a", 0, torch.zeros(1, 2, parts[1].hidden_size))
    with pytest.raises(SessionError, match=r"token ids must lie in \[0"):
        sessions.middle("a", 0, torch.tensor([[1, vocab]]))
    with pytest.raises(SessionError, match="must be \\(1, n\\)"):
        sessions.middle("a", 0, torch.tensor([1, 2]))
    with pytest.raises(SessionError, match="over its bound"):
        sessions.answer("b", torch.tensor([[1, 2]]), sessions.limits.max_positions)
    with pytest.raises(SessionError, match="cannot answer alone"):
        CloudSessions(parts[1]).answer("c", torch.tensor([[1]]), 1)
    assert sessions.middle("a", 0, torch.tensor([[1, 2, 3]])).shape == (1, 3)
