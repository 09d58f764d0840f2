"""HAT's pure layer: the split, the adapter, distillation, speculative decoding, chunking."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec, load_adapter, save_adapter
from edgeloom.algos.hat.chunking import CANDIDATES, Ewma, LinearCost, PrefillModel
from edgeloom.algos.hat.distill import DistillSettings, distill, draft_quality
from edgeloom.algos.hat.speculative import (
    DeviceSession,
    GammaPolicy,
    MiddleSession,
    Sampling,
    accept,
    computed,
    generate,
)
from edgeloom.algos.hat.split import HatParts, HatSplit, KVCache
from edgeloom_testkit.tiny_llms import (
    VOCAB,
    greedy_tokens,
    tiny_bert,
    tiny_decoder,
    tiny_llama,
    token_batch,
)


def run_through(parts: HatParts, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    caches = [KVCache(), KVCache(), KVCache()]
    logits = []
    for piece in ids.split(chunk, dim=1):
        hidden = parts.embed(piece)
        for blocks, cache in zip(
            (parts.input_blocks, parts.middle_blocks, parts.output_blocks), caches, strict=True
        ):
            hidden = parts.run(blocks, hidden, cache)
        logits.append(parts.logits(hidden))
    assert all(cache.length == ids.shape[1] for cache in caches)
    return torch.cat(logits, 1)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("chunk", [1, 5, 16])
def test_the_three_parts_fed_in_chunks_give_the_full_models_logits(
    model_type: str, chunk: int
) -> None:
    model = tiny_decoder(model_type, layers=4)
    parts = HatParts(model, HatSplit(1, 2))
    ids = token_batch(batch=1, length=16)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(run_through(parts, ids, chunk), model(input_ids=ids).logits)


def test_a_cropped_cache_continues_as_if_the_dropped_tokens_never_came() -> None:
    model = tiny_llama()
    parts = HatParts(model, HatSplit(1, 1))
    ids = token_batch(batch=1, length=12)["input_ids"]
    cache = KVCache()
    with torch.no_grad():
        parts.run(parts.input_blocks, parts.embed(ids[:, :8]), cache)
        cache.crop(5)
        assert cache.length == 5
        resumed = parts.run(parts.input_blocks, parts.embed(ids[:, 5:]), cache)
        whole = parts.run(parts.input_blocks, parts.embed(ids))
    torch.testing.assert_close(resumed, whole[:, 5:])


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (HatSplit(0, 1), "split.inputLayers"),
        (HatSplit(1, 0), "split.outputLayers"),
        (HatSplit(2, 2), "must leave a middle"),
    ],
)
def test_a_split_that_does_not_fit_names_its_field(split: HatSplit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HatParts(tiny_llama(layers=4), split)


def test_encoders_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="causal LMs"):
        HatParts(tiny_bert(), HatSplit())


def test_the_mlp_adapter_starts_as_the_identity_the_decoder_one_as_a_middle_block() -> None:
    parts = HatParts(tiny_llama(layers=6), HatSplit(1, 1))
    hidden = torch.randn(1, 5, 64)
    mlp = Adapter(parts, AdapterSpec("mlp", depth=2, width=32))
    torch.testing.assert_close(mlp(hidden), hidden)
    decoder = Adapter(parts, AdapterSpec("decoder", depth=1))
    middle = parts.middle_blocks[len(parts.middle_blocks) // 2]
    with torch.no_grad():
        torch.testing.assert_close(decoder(hidden), parts.run([middle], hidden))
    copied = dict(decoder.blocks[0].named_parameters())
    assert all(copied[name] is not p for name, p in middle.named_parameters())
    assert not any(p is q for p in decoder.parameters() for q in parts.view.model.parameters())


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (AdapterSpec("ffn"), "adapter.kind"),  # type: ignore[arg-type]
        (AdapterSpec(depth=0), "adapter.depth"),
        (AdapterSpec("mlp", width=0), "adapter.width"),
    ],
)
def test_a_bad_adapter_spec_names_its_field(spec: AdapterSpec, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Adapter(HatParts(tiny_llama(), HatSplit()), spec)


@pytest.mark.parametrize("kind", ["decoder", "mlp"])
def test_a_saved_adapter_reloads_into_the_same_draft(tmp_path: Path, kind: str) -> None:
    model = tiny_llama(layers=5)
    parts = HatParts(model, HatSplit(2, 1))
    adapter = Adapter(parts, AdapterSpec(kind, depth=2))  # type: ignore[arg-type]
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_adapter(adapter, parts.split, tmp_path / "adapter")
    parts_again, loaded = load_adapter(model, tmp_path / "adapter")
    assert parts_again.split == HatSplit(2, 1)
    assert loaded.spec == adapter.spec
    hidden = torch.randn(1, 4, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(hidden), adapter(hidden))


def test_loading_from_a_folder_without_an_adapter_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"adapter\.json"):
        load_adapter(tiny_llama(), tmp_path)


def test_distillation_brings_the_draft_closer_to_the_full_model_and_leaves_the_model_alone() -> (
    None
):
    model = tiny_llama(layers=4)
    parts = HatParts(model, HatSplit(1, 1))
    adapter = Adapter(parts, AdapterSpec("mlp", width=64))
    blocks = token_batch(batch=16, length=16, seed=3)["input_ids"]
    before_weights = {name: p.clone() for name, p in model.named_parameters()}
    before = draft_quality(parts, adapter, blocks)
    steps: list[int] = []
    losses = distill(
        parts,
        adapter,
        blocks,
        DistillSettings(steps=60, batch_size=8, learning_rate=3e-3),
        progress=lambda step, _loss: steps.append(step),
    )
    after = draft_quality(parts, adapter, blocks)
    assert steps == list(range(1, 61))
    assert len(losses) == 60
    assert after.kl < 0.7 * before.kl
    assert after.agreement > before.agreement
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before_weights[name]), name
        assert parameter.requires_grad


def speculate(
    parts: HatParts,
    adapter: Adapter,
    prompt: list[int],
    new_tokens: int,
    gamma: GammaPolicy | None = None,
    **options: object,
) -> tuple[list[int], DeviceSession, MiddleSession, float]:
    device = DeviceSession(parts, adapter, Sampling())
    cloud = MiddleSession(parts)
    result = generate(device, cloud, prompt, new_tokens, gamma or GammaPolicy(), **options)  # type: ignore[arg-type]
    return result.tokens, device, cloud, result.acceptance_rate


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("kind", ["decoder", "mlp"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"parallel": False},
        {"chunk_size": 3},
        {"gamma": GammaPolicy(initial=1, adaptive=False)},
        {"gamma": GammaPolicy(minimum=6, initial=6, maximum=6)},
        {"stop_below": 0.5},
        {"gamma": GammaPolicy(minimum=0, cost_ratio=5.0, probe_every=3)},
    ],
    ids=["adaptive", "sequential", "chunked", "gamma-1", "gamma-6", "early-exit", "gamma-0"],
)
def test_greedy_speculation_gives_the_full_models_greedy_tokens(
    model_type: str, kind: str, options: dict[str, object]
) -> None:
    model = tiny_decoder(model_type, layers=5)
    parts = HatParts(model, HatSplit(1, 1))
    adapter = Adapter(parts, AdapterSpec(kind)).eval()  # type: ignore[arg-type]
    prompt = token_batch(batch=1, length=9, seed=0)["input_ids"][0].tolist()
    tokens, device, _, _ = speculate(parts, adapter, prompt, 25, **options)  # type: ignore[arg-type]
    assert tokens == greedy_tokens(model, prompt, 25)
    # the device caches hold the prompt and the committed tokens but the last (and a
    # surviving parallel draft beyond them)
    committed = len(prompt) + len(tokens) - 1
    assert device.target_cache.length == committed
    assert device.input_cache.length >= committed


def test_a_perfect_draft_is_always_accepted() -> None:
    """A cloud that returns its input makes the full model out_sub(in_sub(.)), which is exactly
    the draft with the untrained (identity) MLP adapter."""
    model = tiny_llama(layers=4)
    parts = HatParts(model, HatSplit(1, 1))
    device = DeviceSession(parts, Adapter(parts, AdapterSpec("mlp")).eval(), Sampling())
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()
    gamma = GammaPolicy(initial=2, maximum=5)
    result = generate(device, Echo(), prompt, 30, gamma, parallel=False)
    assert result.acceptance_rate == 1.0
    assert gamma.gamma == 5
    assert len(result.tokens) == 30


class Echo:
    """A cloud whose middle is empty: it returns the states it gets."""

    def submit(self, start: int, hidden: torch.Tensor) -> Future[torch.Tensor]:
        return computed(lambda: hidden)


def test_a_parallel_draft_after_a_fully_accepted_one_survives_and_opens_the_next_round() -> None:
    model = tiny_llama(layers=4)
    parts = HatParts(model, HatSplit(1, 1))
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()

    def run(parallel: bool) -> tuple[list[int], int, int]:
        device = DeviceSession(parts, Adapter(parts, AdapterSpec("mlp")).eval(), Sampling())
        gamma = GammaPolicy(initial=3, maximum=3)
        result = generate(device, Echo(), prompt, 30, gamma, parallel=parallel)
        return result.tokens, len(result.drafted), result.ahead_kept

    sequential, parallel = run(False), run(True)
    assert parallel[0] == sequential[0]
    assert parallel[2] > 0 and sequential[2] == 0
    # a surviving parallel draft saves the next round's first draft step, not a round
    assert parallel[1] <= sequential[1]


def test_the_end_of_sequence_token_stops_generation_and_is_kept() -> None:
    model = tiny_llama(layers=4)
    parts = HatParts(model, HatSplit(1, 1))
    adapter = Adapter(parts, AdapterSpec()).eval()
    prompt = token_batch(batch=1, length=8)["input_ids"][0].tolist()
    reference = greedy_tokens(model, prompt, 20)
    eos = reference[7]
    tokens, *_ = speculate(parts, adapter, prompt, 20, eos_token_ids=[eos])
    assert tokens == reference[: reference.index(eos) + 1]


def test_temperature_sampling_is_reproducible_and_stays_within_the_budget() -> None:
    model = tiny_llama(layers=4)
    parts = HatParts(model, HatSplit(1, 1))
    adapter = Adapter(parts, AdapterSpec()).eval()
    prompt = token_batch(batch=1, length=8)["input_ids"][0].tolist()

    def sample(seed: int) -> list[int]:
        device = DeviceSession(parts, adapter, Sampling(temperature=0.8), seed=seed)
        return generate(device, MiddleSession(parts), prompt, 17, GammaPolicy()).tokens

    first = sample(0)
    assert len(first) == 17
    assert first == sample(0)
    assert first != sample(1)
    assert all(0 <= t < VOCAB for t in first)


def test_the_acceptance_rule_emits_the_full_models_distribution() -> None:
    """Speculative sampling's guarantee: whatever the draft, emitted tokens follow p."""
    generator = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.5])
    samples = 20000
    counts = torch.zeros(5)
    for _ in range(samples):
        draft = int(torch.multinomial(q, 1, generator=generator))
        first = accept([draft], q[None], torch.stack([p, p]), generator)[0]
        counts[first] += 1
    assert float((counts / samples - p).abs().sum()) / 2 < 0.02


def test_greedy_acceptance_keeps_the_agreeing_prefix_then_the_full_models_choice() -> None:
    sampling = Sampling()
    drafts = [3, 1, 4]
    draft_probs = sampling.probabilities(torch.eye(VOCAB)[drafts])
    target = sampling.probabilities(torch.eye(VOCAB)[[3, 1, 2, 7]])
    assert accept(drafts, draft_probs, target, None) == [3, 1, 2]
    assert accept(
        drafts, draft_probs, sampling.probabilities(torch.eye(VOCAB)[[3, 1, 4, 7]]), None
    ) == [3, 1, 4, 7]


def test_the_cloud_refuses_a_start_beyond_what_it_holds() -> None:
    parts = HatParts(tiny_llama(), HatSplit())
    cloud = MiddleSession(parts)
    cloud.forward(0, torch.randn(1, 4, 64))
    with pytest.raises(ValueError, match="beyond the 4 cached"):
        cloud.forward(5, torch.randn(1, 1, 64))
    with pytest.raises(ValueError, match="beyond the 4 cached"):
        cloud.submit(5, torch.randn(1, 1, 64)).result()
    assert cloud.submit(2, torch.randn(1, 1, 64)).result().shape == (1, 1, 64)
    assert cloud.cache.length == 3


def test_gamma_follows_the_acceptance_rate() -> None:
    high = GammaPolicy(minimum=1, maximum=8, initial=4)
    for _ in range(10):
        high.observe(drafted=high.gamma, accepted=high.gamma)
    assert high.gamma == 8
    low = GammaPolicy(minimum=1, maximum=8, initial=4)
    for _ in range(10):
        low.observe(drafted=low.gamma, accepted=0)
    assert low.gamma == 1
    assert low.acceptance is not None and low.acceptance < 0.05
    middling = GammaPolicy(minimum=1, maximum=8, initial=4)
    for _ in range(20):
        middling.observe(drafted=4, accepted=2)
    assert 1 < middling.gamma < 8
    costly = GammaPolicy(minimum=1, maximum=8, initial=4)
    for _ in range(20):
        costly.observe(drafted=4, accepted=2, cost_ratio=1.0)
    assert costly.gamma < middling.gamma
    fixed = GammaPolicy(initial=3, adaptive=False)
    fixed.observe(drafted=3, accepted=0)
    assert fixed.gamma == 3


def test_gamma_falls_to_zero_when_drafting_does_not_pay_and_probes_now_and_then() -> None:
    policy = GammaPolicy(minimum=0, maximum=8, initial=4, probe_every=5)
    for _ in range(6):
        policy.observe(drafted=policy.gamma, accepted=0, cost_ratio=0.5)
    assert policy.gamma == 0
    before = policy.acceptance
    chosen = []
    for _ in range(12):  # rounds without drafts say nothing of the acceptance rate
        policy.observe(drafted=policy.gamma, accepted=0)
        chosen.append(policy.gamma)
    first = chosen.index(1)
    assert first < 5 and chosen[first:] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0][: 12 - first]
    assert policy.acceptance == before
    for _ in range(10):  # the probes find the drafts accepted again
        policy.observe(drafted=max(policy.gamma, 1), accepted=max(policy.gamma, 1))
    assert policy.gamma > 1
    never = GammaPolicy(minimum=0, maximum=0, initial=0)
    for _ in range(40):
        never.observe(drafted=0, accepted=0)
        assert never.gamma == 0


def test_a_decoder_with_a_clock_measures_what_a_draft_step_costs() -> None:
    parts = HatParts(tiny_llama(layers=4), HatSplit(1, 1))
    adapter = Adapter(parts, AdapterSpec("decoder")).eval()
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()
    ticks = iter(range(10_000))  # every reading one tick later: each round's draft costs 1 tick
    gamma = GammaPolicy(initial=4, adaptive=False)
    speculate(parts, adapter, prompt, 12, gamma, clock=lambda: float(next(ticks)))
    assert gamma.cost_ratio == pytest.approx(0.25, rel=0.5)  # 1 tick / 4 drafts / 1 tick


def test_a_bad_gamma_range_is_refused() -> None:
    with pytest.raises(ValueError, match="gamma min <= initial <= max"):
        GammaPolicy(minimum=5, initial=2)


def test_stage_costs_are_fitted_from_measurements() -> None:
    fitted = LinearCost.fit([32, 64, 128, 256], [0.1 + 0.002 * n for n in (32, 64, 128, 256)])
    assert fitted.fixed == pytest.approx(0.1)
    assert fitted.per_token == pytest.approx(0.002)
    assert LinearCost.fit([64, 64], [0.3, 0.5])(64) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least one"):
        LinearCost.fit([], [])


def prefill_model(**changes: float) -> PrefillModel:
    settings: dict[str, float] = {
        "uplink_bytes_per_s": 1e6,
        "downlink_bytes_per_s": 1e7,
        "rtt_s": 0.02,
        "cloud_queue": 0.0,
    } | changes
    return PrefillModel(
        device=LinearCost(0.01, 0.001),
        cloud=LinearCost(0.02, 0.0005),
        bytes_per_token=576 * 2,
        **settings,
    )


def test_the_chunk_size_minimises_the_predicted_time_to_first_token() -> None:
    model = prefill_model()
    chosen = model.best_chunk(1024)
    assert chosen in CANDIDATES
    assert all(model.ttft(1024, chosen) <= model.ttft(1024, c) for c in (*CANDIDATES, 1024))
    # pipelining beats sending the prompt whole, and a short prompt goes whole
    assert model.ttft(1024, chosen) < model.ttft(1024, 1024)
    assert model.best_chunk(20) == 20


def test_a_longer_round_trip_calls_for_bigger_chunks() -> None:
    assert prefill_model(rtt_s=0.5).best_chunk(1024) > prefill_model(rtt_s=0.0).best_chunk(1024)


def test_the_ewma_starts_at_the_first_sample() -> None:
    average = Ewma(0.5)
    assert average.value is None
    assert average.add(4.0) == 4.0
    assert average.add(2.0) == 3.0
    with pytest.raises(ValueError, match="weight"):
        Ewma(0.0)
