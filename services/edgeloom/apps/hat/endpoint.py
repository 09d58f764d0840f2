"""The device's OpenAI-compatible HTTP API, served by HAT speculative decoding.

Routes (FastAPI): ``GET /healthz``, ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions``, with ``stream: true`` as server-sent events ending in
``data: [DONE]`` and usage counts as OpenAI reports them. A request runs on its own sequence in
the cloud (a fresh session id) and the decoding runs in a worker thread, so the event loop keeps
serving. Bad requests (malformed JSON, an unknown model, too many tokens, a prompt longer than
the context) get OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}`` with a
4xx status, and the service keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerBase

from edgeloom.algos.hat.adapter import Adapter
from edgeloom.algos.hat.speculative import Crossing, GammaPolicy, Generation, Sampling, decode
from edgeloom.algos.hat.split import HatParts
from edgeloom.api.device import DeviceProfile
from edgeloom.api.kinds.hatinferenceservice import ServingMethod
from edgeloom.apps.hat.chunks import ChunkPlanner
from edgeloom.apps.hat.cloud import CloudLink
from edgeloom.apps.hat.emulation import Emulated, TimedDeviceSession, TimedMiddle, Timeline
from edgeloom.apps.hat.metrics import DeviceMetrics


@dataclass(frozen=True)
class ServingSettings:
    model_id: str
    method: ServingMethod = ServingMethod.HAT
    """``u-shape`` comes with gamma 0; ``sd-tokens`` and ``cloud-only`` send tokens."""
    max_tokens: int = 512
    """The most new tokens one request may ask for."""
    default_max_tokens: int = 64
    gamma_min: int = 0
    gamma_max: int = 8
    gamma_initial: int = 4
    adaptive_gamma: bool = True
    parallel_drafting: bool = True
    chunk_size: int | None = 128
    """Tokens per prefill chunk (None: the whole prompt at once); with ``adaptive_chunking``
    the first guess before the device has measured its costs."""
    adaptive_chunking: bool = False


TOKEN_METHODS = (ServingMethod.SD_TOKENS, ServingMethod.CLOUD_ONLY)
"""The benchmark's baselines where tokens cross: the cloud answers greedy choices only."""

EMULATED_FIELD = "edgeloom"
"""The field of a whole (not streamed) response with the request's emulated figures
(:meth:`Emulated.figures`) and its token ids, beside OpenAI's own fields (clients ignore it)."""


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stream: bool = False
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)


class CompletionRequest(_Request):
    prompt: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)


class DeviceEngine:
    """The device's draft model and its link to the cloud, decoding one request at a time per
    thread (each request is a sequence of its own), on the emulated clock of ``profile``:
    requests follow one another on it (concurrent requests to one device are each timed as
    if the device were theirs alone)."""

    def __init__(
        self,
        parts: HatParts,
        adapter: Adapter,
        tokenizer: PreTrainedTokenizerBase,
        cloud: CloudLink,
        settings: ServingSettings,
        metrics: DeviceMetrics | None = None,
        profile: DeviceProfile | None = None,
    ) -> None:
        self.parts, self.adapter, self.tokenizer = parts, adapter, tokenizer
        self.cloud, self.settings, self.metrics = cloud, settings, metrics
        self.profile = profile or DeviceProfile()
        self.context = int(parts.view.config.max_position_embeddings)
        self.stop_ids = [t for t in {tokenizer.eos_token_id} if t is not None]
        self.clock = 0.0
        """The emulated time the device's last request ended."""
        width = parts.hidden_size * next(parts.view.model.parameters()).element_size()
        self.planner = ChunkPlanner(self.profile, width, settings.chunk_size or 128)

    def tokens(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float,
        seed: int,
        session: str,
        emulated: Emulated | None = None,
    ) -> Iterator[int]:
        """The request's new tokens as they are decided; ``emulated`` collects its emulated
        times and costs."""
        emulated = emulated or Emulated()
        timeline = Timeline(self.profile, self.clock, self.clock, self.clock)
        emulated.started = self.clock
        s = self.settings
        result = Generation([])
        middle = TimedMiddle(self.cloud.middle(session), timeline)
        chunk = self.planner.chunk(len(prompt)) if s.adaptive_chunking else s.chunk_size
        emulated.chunk_size = min(chunk or len(prompt), len(prompt))
        decoding: Iterator[int]
        if s.method == ServingMethod.CLOUD_ONLY:
            decoding = middle.answer(prompt, max_tokens, self.stop_ids)
        else:
            crossing = Crossing.TOKENS if s.method == ServingMethod.SD_TOKENS else Crossing.STATES
            device = TimedDeviceSession(
                self.parts, self.adapter, Sampling(temperature), timeline, seed, crossing
            )
            gamma = GammaPolicy(s.gamma_min, s.gamma_max, s.gamma_initial, s.adaptive_gamma)
            decoding = decode(
                device,
                middle,
                prompt,
                max_tokens,
                gamma,
                result,
                chunk,
                self.stop_ids,
                parallel=s.parallel_drafting,
                clock=lambda: timeline.now,
            )
        outcome = "failed"
        try:
            for token in decoding:
                if s.method == ServingMethod.CLOUD_ONLY:
                    result.tokens.append(token)
                emulated.emitted.append(timeline.now)
                yield token
            outcome = "ok"
        finally:
            self.clock = max(self.clock, timeline.now)
            self.planner.observe(timeline)
            emulated.drafted, emulated.accepted = sum(result.drafted), sum(result.accepted)
            emulated.uplink_bytes = timeline.uplink_bytes
            emulated.downlink_bytes = timeline.downlink_bytes
            emulated.cloud_compute_s = timeline.cloud_s
            if self.metrics is not None:
                self.metrics.finished(outcome, result, emulated)


def create_app(engine: DeviceEngine) -> FastAPI:
    """The FastAPI application of one device."""
    app = FastAPI(title="edgeloom HAT device", docs_url=None, redoc_url=None)
    settings = engine.settings
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        if engine.metrics is not None and error.status < 500:  # a failure is counted already
            engine.metrics.refused()
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in problem.get("loc", ()) if part != "body"]
        message = f"{'.'.join(where) or 'body'}: {problem.get('msg', 'invalid request')}"
        if engine.metrics is not None:
            engine.metrics.refused()
        return ApiError(400, message, ".".join(where) or None, "invalid_request").response()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {"id": settings.model_id, "object": "model", "created": created}
        return {"object": "list", "data": [model | {"owned_by": "edgeloom"}]}

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> JSONResponse | StreamingResponse:
        prompt = engine.tokenizer(body.prompt)["input_ids"]
        return await _answer(engine, body, prompt, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        messages = [m.model_dump() for m in body.messages]
        text = engine.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        prompt = engine.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        return await _answer(engine, body, prompt, chat=True)

    return app


async def _answer(
    engine: DeviceEngine, body: _Request, prompt: list[int], chat: bool
) -> JSONResponse | StreamingResponse:
    settings = engine.settings
    if body.model != settings.model_id:
        raise ApiError(404, f"The model '{body.model}' does not exist", "model", "model_not_found")
    wanted = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
    if wanted > settings.max_tokens:
        raise ApiError(
            400,
            f"max_tokens is {wanted}; this device serves at most {settings.max_tokens}",
            "max_tokens",
            "invalid_value",
        )
    if not prompt:
        raise ApiError(400, "the prompt is empty", "prompt", "invalid_value")
    if settings.method in TOKEN_METHODS and body.temperature != 0:
        raise ApiError(
            400,
            f"the {settings.method} baseline decodes greedily: send temperature 0",
            "temperature",
            "invalid_value",
        )
    if len(prompt) + wanted > engine.context:
        raise ApiError(
            400,
            f"This model's maximum context length is {engine.context} tokens; the prompt has "
            f"{len(prompt)} and max_tokens is {wanted}",
            "messages" if chat else "prompt",
            "context_length_exceeded",
        )
    request_id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    session = secrets.token_hex(16)
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    emulated = Emulated()
    stream = _stream_tokens(engine, prompt, wanted, body.temperature, seed, session, emulated)
    shape = _Shape(request_id, settings.model_id, int(time.time()), chat, len(prompt))
    if body.stream:
        return StreamingResponse(shape.events(engine, stream), media_type="text/event-stream")
    tokens = [token async for token in stream]
    finish = _finish_reason(engine, tokens)
    whole = shape.whole(_text(engine, tokens), finish, len(tokens))
    whole[EMULATED_FIELD] = emulated.figures() | {"token_ids": tokens}
    return JSONResponse(whole)


async def _stream_tokens(
    engine: DeviceEngine,
    prompt: list[int],
    wanted: int,
    temperature: float,
    seed: int,
    session: str,
    emulated: Emulated,
) -> AsyncIterator[int]:
    """The decoder's tokens as they come, from its worker thread; the cloud session is
    released at the end, also when the client goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int | BaseException | None] = asyncio.Queue()
    cancelled = threading.Event()

    def produce() -> None:
        try:
            for token in engine.tokens(prompt, wanted, temperature, seed, session, emulated):
                loop.call_soon_threadsafe(queue.put_nowait, token)
                if cancelled.is_set():
                    break
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as error:  # handed to the request, which answers it
            loop.call_soon_threadsafe(queue.put_nowait, error)

    worker = loop.run_in_executor(None, produce)
    metrics = engine.metrics
    if metrics is not None:
        metrics.active.inc()
    last, first = time.perf_counter(), True
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise ApiError(502, f"decoding failed: {item}", code="cloud_error")
            now = time.perf_counter()
            if metrics is not None:
                (metrics.ttft if first else metrics.tbt).observe(now - last)
            last, first = now, False
            yield item
    finally:
        cancelled.set()
        await worker
        await engine.cloud.close(session)
        if metrics is not None:
            metrics.active.dec()


def _text(engine: DeviceEngine, tokens: list[int]) -> str:
    return str(engine.tokenizer.decode(tokens, skip_special_tokens=True))


def _finish_reason(engine: DeviceEngine, tokens: list[int]) -> str:
    return "stop" if tokens and tokens[-1] in engine.stop_ids else "length"


@dataclass(frozen=True)
class _Shape:
    """OpenAI's response objects for one request."""

    request_id: str
    model: str
    created: int
    chat: bool
    prompt_tokens: int

    def _head(self, suffix: str = "") -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + suffix
        return {"id": self.request_id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def whole(self, text: str, finish: str, completion_tokens: int) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        return self._head() | {"choices": [choice], "usage": self._usage(completion_tokens)}

    def _chunk(self, text: str | None, finish: str | None, first: bool = False) -> str:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            delta: dict[str, str] = {"role": "assistant"} if first else {}
            choice["delta"] = delta | ({"content": text} if text else {})
        else:
            choice |= {"text": text or "", "logprobs": None}
        suffix = ".chunk" if self.chat else ""
        return f"data: {json.dumps(self._head(suffix) | {'choices': [choice]})}\n\n"

    async def events(self, engine: DeviceEngine, stream: AsyncIterator[int]) -> AsyncIterator[str]:
        """Server-sent events: text deltas as tokens decode to whole characters, the finish
        reason with the usage counts, then ``[DONE]``."""
        tokens: list[int] = []
        sent = ""
        yield self._chunk("", None, first=True)
        try:
            async for token in stream:
                tokens.append(token)
                text = _text(engine, tokens)
                if text.endswith("\ufffd"):
                    continue  # a character split over tokens: wait for the rest
                if len(text) > len(sent):
                    yield self._chunk(text[len(sent) :], None)
                    sent = text
        except ApiError as error:
            failure = {"message": error.message, "type": "server_error", "code": error.code}
            yield f"data: {json.dumps({'error': failure | {'param': None}})}\n\n"
            return
        final = json.loads(self._chunk(None, _finish_reason(engine, tokens))[6:])
        final["usage"] = self._usage(len(tokens))
        yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"
