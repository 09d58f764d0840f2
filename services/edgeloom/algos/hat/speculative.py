"""HAT's speculative decoding, split between the device and the cloud.

The device drafts up to gamma tokens with ``out_sub(adapter(in_sub(.)))`` and sends the
input-submodel hidden states of the last committed token and the drafts; the cloud runs the
middle blocks on them in one pass against its per-sequence cache (:class:`MiddleSession`) and
returns hidden states; the device runs the output blocks on those for the full model's logits,
keeps the longest accepted prefix plus one token of its own choosing (a correction or a bonus),
and crops every cache to what was kept. The cloud crops its own cache to the start position the
next request names, so a rejected draft costs no extra message.

Acceptance follows speculative sampling (Leviathan et al. 2023; Chen et al. 2023): a draft
token ``x`` drawn from the draft's ``q`` is kept with probability ``min(1, p(x)/q(x))``, and on
rejection the token is drawn from ``normalise(max(0, p - q))``, so every emitted token has the
full model's distribution ``p``. At temperature 0 this is greedy decoding: a draft is kept when
it is the full model's argmax, so the output is token for token the full model's greedy output.

The device's draft path (adapter and draft-side output blocks) runs lazily: the hidden states it
has not consumed yet wait in a queue, so a token's input-submodel state is computed once and
serves both the draft and the verification.

The same decoder runs the benchmark's standard device-cloud speculative decoding, where tokens
cross instead (``Crossing.TOKENS``): the device drafts with the same small model, sends the token
ids, and the cloud runs the whole model (:class:`WholeSession`) and answers its greedy choice at
every position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import torch

from edgeloom.algos.hat.adapter import Adapter
from edgeloom.algos.hat.chunking import Ewma
from edgeloom.algos.hat.split import HatParts, KVCache


@dataclass(frozen=True)
class Sampling:
    """Decoding settings: ``temperature`` 0 is greedy."""

    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution sampled from at this temperature (one-hot on the argmax if greedy)."""
        if self.greedy:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(
                torch.float32
            )
        return torch.softmax(logits.float() / self.temperature, dim=-1)


def choose(probabilities: torch.Tensor, generator: torch.Generator | None) -> int:
    """A token drawn from ``probabilities`` (the argmax when it is one-hot)."""
    return int(torch.multinomial(probabilities, 1, generator=generator))


def accept(
    drafts: Sequence[int],
    draft_probabilities: torch.Tensor,
    target_probabilities: torch.Tensor,
    generator: torch.Generator | None,
) -> list[int]:
    """The tokens one verification emits: the accepted drafts, then one more.

    Parameters
    ----------
    drafts : Sequence[int]
        The gamma draft tokens.
    draft_probabilities : torch.Tensor
        ``(gamma, vocab)``: the draft's distribution each draft token was drawn from.
    target_probabilities : torch.Tensor
        ``(gamma + 1, vocab)``: the full model's distribution at the position of the last committed
        token and of each draft token (the last row gives the bonus token when all are kept).
    """
    emitted: list[int] = []
    for index, token in enumerate(drafts):
        p, q = target_probabilities[index], draft_probabilities[index]
        if float(q[token]) > 0 and torch.rand((), generator=generator) * q[token] < p[token]:
            emitted.append(token)
            continue
        residual = (p - q).clamp_min(0)
        total = float(residual.sum())
        emitted.append(choose(residual / total if total > 0 else p, generator))
        return emitted
    emitted.append(choose(target_probabilities[len(drafts)], generator))
    return emitted


class Crossing(StrEnum):
    """What a device sends the cloud: its input-submodel ``states`` (HAT) or the ``tokens``
    (standard device-cloud decoding, greedy only: the cloud answers token ids)."""

    STATES = "states"
    TOKENS = "tokens"


@dataclass
class Draft:
    tokens: list[int]
    probabilities: torch.Tensor
    """``(len(tokens), vocab)``: what each draft token was drawn from."""
    hidden: torch.Tensor
    """``(1, len(tokens) + 1, d)``: input-submodel states of the last committed token and the
    drafts, the message to the cloud."""
    start: int
    """The position of the first of those states."""
    inputs: list[int]
    """The token ids of those positions (the last committed token, then the drafts)."""


class DeviceSession:
    """The device's side of one sequence: the input submodel, the adapter and the output
    submodel, with their caches (the output blocks keep two: one fed by the adapter for drafts,
    one fed by the cloud for the full model's logits)."""

    def __init__(
        self,
        parts: HatParts,
        adapter: Adapter,
        sampling: Sampling,
        seed: int = 0,
        crossing: Crossing = Crossing.STATES,
    ) -> None:
        if crossing == Crossing.TOKENS and not sampling.greedy:
            raise ValueError("a device that sends tokens decodes greedily (temperature 0)")
        self.parts, self.adapter, self.sampling = parts, adapter, sampling
        self.crossing = crossing
        self.generator = torch.Generator().manual_seed(seed)
        self.input_cache, self.adapter_cache = KVCache(), KVCache()
        self.draft_cache, self.target_cache = KVCache(), KVCache()
        self._queued: torch.Tensor | None = None
        """Input-submodel states from ``adapter_cache.length`` on, not yet drafted from."""
        self._unused_logits: torch.Tensor | None = None
        """Draft logits after the last drafted-from state, when an early exit left them."""

    @property
    def length(self) -> int:
        """Positions of the sequence the device has encoded."""
        return self.input_cache.length

    @torch.inference_mode()
    def encode(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Input-submodel states ``(1, n, d)`` of the next tokens of the sequence."""
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        hidden = self.parts.run(self.parts.input_blocks, self.parts.embed(ids), self.input_cache)
        self._unused_logits = None
        self._queued = hidden if self._queued is None else torch.cat([self._queued, hidden], 1)
        return hidden

    def outgoing(self, token_ids: Sequence[int], states: torch.Tensor) -> torch.Tensor:
        """What the cloud gets for these positions: their input-submodel ``states`` or their
        ids ``(1, n)``."""
        if self.crossing == Crossing.TOKENS:
            return torch.tensor([list(token_ids)], dtype=torch.long)
        return states

    @torch.inference_mode()
    def absorb(self, middle: torch.Tensor) -> torch.Tensor:
        """The full model's logits ``(n, vocab)`` at the positions of the cloud's states."""
        output = self.parts.run(self.parts.output_blocks, middle, self.target_cache)
        return self.parts.logits(output)[0]

    @torch.inference_mode()
    def verdict(self, reply: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """The full model's distributions ``(rows, vocab)`` at the last ``rows`` positions of the
        cloud's ``reply`` (every position when None): from its middle states, or one-hot on the
        token ids a whole-model cloud chose."""
        if self.crossing == Crossing.TOKENS:
            chosen = reply[0] if rows is None else reply[0, -rows:]
            vocab = self.parts.view.config.vocab_size
            return torch.nn.functional.one_hot(chosen, vocab).to(torch.float32)
        logits = self.absorb(reply)
        return self.sampling.probabilities(logits if rows is None else logits[-rows:])

    @torch.inference_mode()
    def draft(self, last: int, gamma: int, stop_below: float = 0.0) -> Draft:
        """Encode the last committed token and draft up to ``gamma`` tokens after it.

        Drafting stops early when the draft's top probability falls below ``stop_below``
        (Kangaroo's early exit; 0 never stops early).
        """
        start = self.length
        vocab = self.parts.view.config.vocab_size
        draft = Draft([], torch.empty(0, vocab), self.encode([last]), start, [last])
        return self.extend(draft, gamma, stop_below)

    @torch.inference_mode()
    def extend(self, draft: Draft, count: int, stop_below: float = 0.0) -> Draft:
        """``draft`` with up to ``count`` more tokens drafted after its last one."""
        tokens, rows, states = list(draft.tokens), [draft.probabilities], [draft.hidden]
        inputs = list(draft.inputs)
        for _ in range(count):
            logits = self._draft_logits()
            if stop_below and float(torch.softmax(logits.float(), -1).max()) < stop_below:
                self._unused_logits = logits
                break
            probabilities = self.sampling.probabilities(logits)
            token = choose(probabilities, self.generator)
            tokens.append(token)
            inputs.append(token)
            rows.append(probabilities[None])
            states.append(self.encode([token]))
        return Draft(tokens, torch.cat(rows), torch.cat(states, 1), draft.start, inputs)

    @torch.inference_mode()
    def draft_ahead(self, draft: Draft, count: int) -> Draft:
        """Parallel drafting: while ``draft`` is being verified, draft ``count`` tokens after
        it as if it were accepted whole. The result starts at the position after ``draft``;
        :meth:`verify` keeps it when the full model's own next token is its first token."""
        vocab = self.parts.view.config.vocab_size
        empty = Draft([], torch.empty(0, vocab), torch.empty(1, 0, self.parts.hidden_size), 0, [])
        ahead = self.extend(empty, count)
        ahead.start = draft.start + len(draft.tokens) + 1
        return ahead

    def _draft_logits(self) -> torch.Tensor:
        """The draft's logits after the last encoded token (consumes the queue)."""
        if self._queued is None:
            if self._unused_logits is None:
                raise RuntimeError("encode a token before drafting")
            logits, self._unused_logits = self._unused_logits, None
            return logits
        stand_in = self.adapter(self._queued, self.adapter_cache)
        output = self.parts.run(self.parts.output_blocks, stand_in, self.draft_cache)
        self._queued = None
        return self.parts.logits(output)[0, -1]

    @torch.inference_mode()
    def verify(
        self, draft: Draft, reply: torch.Tensor, ahead: Draft | None = None
    ) -> tuple[list[int], Draft | None]:
        """The tokens emitted for ``draft`` given the cloud's reply for it, and what survives
        of ``ahead`` (the parallel draft after it): the next draft, its first token now
        committed, or None. Every cache is cropped to what is kept."""
        target = self.verdict(reply)
        emitted = accept(draft.tokens, draft.probabilities, target, self.generator)
        if (
            ahead is not None
            and ahead.tokens
            and len(emitted) == len(draft.tokens) + 1
            and emitted[-1] == ahead.tokens[0]
        ):
            # the first ahead token is committed; its state opens the next verification
            return emitted, Draft(
                ahead.tokens[1:], ahead.probabilities[1:], ahead.hidden, ahead.start, ahead.inputs
            )
        self.rollback(draft.start + len(emitted))
        return emitted, None

    def rollback(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        queued_from = self.adapter_cache.length
        if length < queued_from:
            self._unused_logits = None
        self.input_cache.crop(length)
        self.target_cache.crop(length)
        self.adapter_cache.crop(length)
        self.draft_cache.crop(length)
        if self._queued is not None:
            self._queued = self._queued[:, : max(0, length - queued_from)]
            if self._queued.shape[1] == 0:
                self._queued = None


class MiddleSession:
    """The cloud's side of one sequence: the middle blocks and their cache."""

    def __init__(self, parts: HatParts) -> None:
        self.parts = parts
        self.cache = KVCache()

    @torch.inference_mode()
    def forward(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        """Middle-submodel states for ``hidden``, the states of positions ``start, ...``;
        positions from ``start`` on that were cached before are forgotten first."""
        if not 0 <= start <= self.cache.length:
            raise ValueError(f"start {start} is beyond the {self.cache.length} cached positions")
        self.cache.crop(start)
        return self.parts.run(self.parts.middle_blocks, hidden, self.cache)

    def submit(self, start: int, hidden: torch.Tensor) -> Future[torch.Tensor]:
        """:meth:`forward` as a :class:`Middle` (computed at once, in this thread)."""
        return computed(lambda: self.forward(start, hidden))


class WholeSession(MiddleSession):
    """A whole-model cloud's side of one sequence, for the baselines where tokens cross: every
    block on the token ids ``(1, n)`` it gets, answering the full model's greedy choice
    ``(1, n)`` after each position."""

    @torch.inference_mode()
    def forward(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        if not 0 <= start <= self.cache.length:
            raise ValueError(f"start {start} is beyond the {self.cache.length} cached positions")
        self.cache.crop(start)
        states = self.parts.run(list(self.parts.view.layers), self.parts.embed(hidden), self.cache)
        return self.parts.logits(states).argmax(-1)

    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, eos_token_ids: Sequence[int] = ()
    ) -> Iterator[int]:
        """Greedy decoding after ``prompt`` ``(1, n)``, in the cloud alone (the ``cloud-only``
        baseline): each new token as it is decided, up to ``max_new_tokens`` or an
        end-of-sequence token (kept)."""
        token = int(self.forward(0, prompt)[0, -1])
        for count in range(1, max_new_tokens + 1):
            yield token
            if token in eos_token_ids or count == max_new_tokens:
                return
            token = int(self.forward(self.cache.length, torch.tensor([[token]]))[0, -1])


def computed(call: Callable[[], torch.Tensor]) -> Future[torch.Tensor]:
    """A future already holding ``call()``'s result (or the exception it raised)."""
    future: Future[torch.Tensor] = Future()
    try:
        future.set_result(call())
    except Exception as error:
        future.set_exception(error)
    return future


class Middle(Protocol):
    """The cloud as the device sees it: ``submit(start, input states)`` returns a future of
    the middle states, so the device can work while it waits."""

    def submit(self, start: int, hidden: torch.Tensor) -> Future[torch.Tensor]: ...


class GammaPolicy:
    """How many tokens to draft next.

    Adaptive: the per-token acceptance rate alpha is estimated from recent rounds (exponentially
    weighted successes and failures), and gamma maximises the expected tokens per unit of
    time, ``(1 - alpha^(gamma+1)) / ((1 - alpha) (gamma c + 1))``, where ``c`` is the cost of
    one draft step relative to one verification round (Leviathan et al. 2023, §3.4), measured
    by the decoder when it has a clock (``cost_ratio`` is the guess before that).
    Fixed: always ``initial``.

    With ``minimum`` 0 it stops drafting when drafting does not pay (gamma 0: one round trip
    per token, U-shaped decoding); since a round without drafts says nothing of the acceptance
    rate, every ``probe_every`` rounds at 0 drafts one token to measure it again.
    """

    def __init__(
        self,
        minimum: int = 1,
        maximum: int = 8,
        initial: int = 4,
        adaptive: bool = True,
        cost_ratio: float = 0.1,
        smoothing: float = 0.3,
        probe_every: int = 16,
    ) -> None:
        if not 0 <= minimum <= initial <= maximum:
            raise ValueError(
                f"need 0 <= gamma min <= initial <= max, got {minimum}, {initial}, {maximum}"
            )
        self.minimum, self.maximum, self.adaptive = minimum, maximum, adaptive
        self.gamma = initial
        self.probe_every = probe_every
        self._successes, self._failures = Ewma(smoothing, 0.0), Ewma(smoothing, 0.0)
        self._cost_ratio = Ewma(smoothing, cost_ratio)
        self._rounds_at_zero = 0

    @property
    def cost_ratio(self) -> float:
        return self._cost_ratio.value or 0.0

    @property
    def acceptance(self) -> float | None:
        """The estimated per-token acceptance rate (None before any round)."""
        successes, failures = self._successes.value or 0.0, self._failures.value or 0.0
        seen = successes + failures
        return successes / seen if seen else None

    def observe(self, drafted: int, accepted: int, cost_ratio: float | None = None) -> None:
        """Record a round: ``accepted`` of ``drafted`` drafts were kept; ``cost_ratio`` the
        measured draft-step / verification time, when known."""
        if drafted:
            self._successes.add(accepted)
            self._failures.add(1.0 if accepted < drafted else 0.0)
        if cost_ratio is not None:
            self._cost_ratio.add(cost_ratio)
        if not self.adaptive:
            return
        self.gamma = self.best_gamma()
        if self.gamma == 0 and self.maximum > 0:
            self._rounds_at_zero += 1
            if self._rounds_at_zero >= self.probe_every:
                self.gamma, self._rounds_at_zero = 1, 0
        else:
            self._rounds_at_zero = 0

    def best_gamma(self) -> int:
        alpha = self.acceptance
        if alpha is None:
            return self.gamma
        return max(range(self.minimum, self.maximum + 1), key=self._speed(alpha))

    def _speed(self, alpha: float) -> Callable[[int], float]:
        def speed(gamma: int) -> float:
            tokens = gamma + 1.0 if alpha >= 1.0 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
            return tokens / (gamma * self.cost_ratio + 1)

        return speed


@dataclass
class Generation:
    tokens: list[int]
    drafted: list[int] = field(default_factory=list)
    """Draft tokens sent per verification round."""
    accepted: list[int] = field(default_factory=list)
    """Of those, how many were kept."""
    ahead_kept: int = 0
    """Rounds whose parallel draft survived and opened the next round."""

    @property
    def acceptance_rate(self) -> float:
        return sum(self.accepted) / sum(self.drafted) if sum(self.drafted) else 0.0


def generate(
    device: DeviceSession,
    middle: Middle,
    prompt: Sequence[int],
    max_new_tokens: int,
    gamma: GammaPolicy,
    chunk_size: int | None = None,
    eos_token_ids: Sequence[int] = (),
    stop_below: float = 0.0,
    parallel: bool = True,
    clock: Callable[[], float] | None = None,
) -> Generation:
    """Generate after ``prompt`` with the device and the cloud's middle (see :func:`decode`)."""
    result = Generation([])
    for _ in decode(
        device,
        middle,
        prompt,
        max_new_tokens,
        gamma,
        result,
        chunk_size,
        eos_token_ids,
        stop_below,
        parallel,
        clock,
    ):
        pass
    return result


def decode(
    device: DeviceSession,
    middle: Middle,
    prompt: Sequence[int],
    max_new_tokens: int,
    gamma: GammaPolicy,
    result: Generation,
    chunk_size: int | None = None,
    eos_token_ids: Sequence[int] = (),
    stop_below: float = 0.0,
    parallel: bool = True,
    clock: Callable[[], float] | None = None,
) -> Iterator[int]:
    """The new tokens after ``prompt``, each as soon as it is decided; ``result`` collects
    them with the round statistics.

    The prompt is prefilled ``chunk_size`` tokens at a time (all at once when None), pipelined;
    the first new token comes from the full model's logits after the prompt. With ``parallel``
    the device drafts ahead while each verification is in flight. Generation stops after
    ``max_new_tokens`` or an end-of-sequence token (which is kept). With a ``clock`` (the
    device's time), each round measures the cost of a draft step relative to the round for
    ``gamma``.
    """
    if not prompt:
        raise ValueError("the prompt is empty")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    step = chunk_size or len(prompt)
    pending = []
    for begin in range(0, len(prompt), step):  # the device encodes chunk j + 1 while the
        chunk = prompt[begin : begin + step]  # cloud works on chunk j
        pending.append(middle.submit(begin, device.outgoing(chunk, device.encode(chunk))))
    for future in pending:
        last = device.verdict(future.result(), rows=1)
    result.tokens.append(choose(last[0], device.generator))
    yield result.tokens[-1]
    stops = set(eos_token_ids)
    draft: Draft | None = None
    while len(result.tokens) < max_new_tokens and result.tokens[-1] not in stops:
        budget = min(gamma.gamma, max_new_tokens - len(result.tokens) - 1)
        began = clock() if clock else 0.0
        if draft is None:
            draft = device.draft(result.tokens[-1], budget, stop_below)
            fresh = len(draft.tokens)
        else:
            fresh = max(0, budget - len(draft.tokens))
            draft = device.extend(draft, fresh, stop_below)
        drafted_at = clock() if clock else 0.0
        future = middle.submit(draft.start, device.outgoing(draft.inputs, draft.hidden))
        room = max_new_tokens - len(result.tokens) - len(draft.tokens) - 1
        ahead = device.draft_ahead(draft, min(gamma.gamma, room)) if parallel and room else None
        emitted, following = device.verify(draft, future.result(), ahead)
        result.drafted.append(len(draft.tokens))
        result.accepted.append(len(emitted) - 1)
        result.ahead_kept += following is not None
        cost_ratio = None
        if clock and fresh:
            round_s = clock() - drafted_at
            cost_ratio = (drafted_at - began) / fresh / round_s if round_s > 0 else None
        gamma.observe(len(draft.tokens), len(emitted) - 1, cost_ratio)
        for token in emitted:
            result.tokens.append(token)
            yield token
            if token in stops:
                break
        draft = following
