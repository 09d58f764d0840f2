"""The HAT device's OpenAI-compatible endpoint on uvicorn, driven by the official ``openai``
client: SmolLM2 answers as its greedy self, streamed and not, in-process and with the cloud
over a real nats-server; bad requests get OpenAI-shaped 4xx errors and serving goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import uvicorn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec
from edgeloom.algos.hat.split import HatParts, HatSplit
from edgeloom.api.kinds.hatinferenceservice import ServingMethod
from edgeloom.apps.hat.cloud import (
    BusCloud,
    CloudLink,
    CloudSessions,
    LocalCloud,
    serve_cloud,
)
from edgeloom.apps.hat.endpoint import DeviceEngine, ServingSettings, create_app
from edgeloom.local.nats_server import NatsServer
from edgeloom.models.llm import load_model
from edgeloom.runtime.bus import Bus
from edgeloom_testkit.controlplane import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter]:
    model, tokenizer = load_model(smollm2)
    parts = HatParts(model, HatSplit(2, 2))
    return model, tokenizer, parts, Adapter(parts, AdapterSpec("mlp")).eval()


@asynccontextmanager
async def serving(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter],
    cloud: Callable[[HatParts], CloudLink],
    method: ServingMethod = ServingMethod.HAT,
) -> AsyncIterator[str]:
    _, tokenizer, parts, adapter = smol
    settings = ServingSettings(model_id=MODEL, max_tokens=64, chunk_size=8, method=method)
    app = create_app(DeviceEngine(parts, adapter, tokenizer, cloud(parts), settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def local(parts: HatParts) -> CloudLink:
    return LocalCloud(CloudSessions(parts))


def full_greedy_answer(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter], tokens: int
) -> str:
    model, tokenizer, _, _ = smol
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=tokens, do_sample=False)  # type: ignore[operator]
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


async def test_chat_answers_as_the_full_model_streamed_or_not(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter],
) -> None:
    async with serving(smol, local) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
        whole = await client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=24,
            temperature=0,  # type: ignore[arg-type]
        )
        answer = whole.choices[0].message.content
        assert answer == full_greedy_answer(smol, 24)
        assert "Paris" in (answer or "")
        assert whole.choices[0].finish_reason == "stop"
        assert whole.usage is not None and whole.usage.completion_tokens > 0
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
        )
        pieces, finishes = [], []
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finishes.append(chunk.choices[0].finish_reason)
        assert "".join(pieces) == answer
        assert finishes[-1] == "stop" and len(pieces) > 3


async def test_completions_stop_at_max_tokens_and_report_usage(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter],
) -> None:
    async with serving(smol, local) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        result = await client.completions.create(
            model=MODEL, prompt="The three primary colours are", max_tokens=6, temperature=0
        )
        assert result.choices[0].finish_reason == "length"
        assert result.usage is not None and result.usage.completion_tokens == 6
        streamed = await client.completions.create(
            model=MODEL,
            prompt="The three primary colours are",
            max_tokens=6,
            temperature=0,
            stream=True,
        )
        text = "".join([c.choices[0].text async for c in streamed if c.choices])
        assert text == result.choices[0].text
        sampled = await client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0.9, seed=3
        )
        again = await client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0.9, seed=3
        )
        assert sampled.choices[0].text == again.choices[0].text


async def test_bad_requests_get_openai_errors_and_serving_goes_on(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter],
) -> None:
    async with serving(smol, local) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-9", messages=QUESTION)  # type: ignore[arg-type]
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError, match="at most 64"):
            await client.completions.create(model=MODEL, prompt="hi", max_tokens=65)
        with pytest.raises(openai.BadRequestError) as too_long:
            await client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=4)
        assert too_long.value.code == "context_length_exceeded"
        async with httpx.AsyncClient(base_url=url) as raw:
            broken = await raw.post(
                "/v1/chat/completions",
                content=b'{"model": "smollm2-135m", "messages": [',
                headers={"content-type": "application/json"},
            )
            assert broken.status_code == 400
            assert broken.json()["error"]["type"] == "invalid_request_error"
            no_messages = await raw.post("/v1/chat/completions", json={"model": MODEL})
            assert no_messages.status_code == 400
            assert no_messages.json()["error"]["param"] == "messages"
            assert (await raw.get("/healthz")).json() == {"status": "ok"}
        after = await client.completions.create(model=MODEL, prompt="Hello", max_tokens=3)
        assert after.usage is not None and after.usage.completion_tokens == 3


async def test_a_baseline_where_tokens_cross_answers_greedily_and_refuses_sampling(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter],
) -> None:
    def whole(parts: HatParts) -> CloudLink:
        return LocalCloud(CloudSessions(parts, whole=True))

    async with serving(smol, whole, ServingMethod.SD_TOKENS) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="decodes greedily") as sampled:
            await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]
        assert sampled.value.param == "temperature"
        greedy = await client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=12,
            temperature=0,  # type: ignore[arg-type]
        )
        assert greedy.choices[0].message.content == full_greedy_answer(smol, 12)


async def test_the_endpoint_reaches_the_cloud_over_nats(
    smol: tuple[PreTrainedModel, PreTrainedTokenizerBase, HatParts, Adapter],
    nats_server: NatsServer,
) -> None:
    subject = "default.hatinferenceservice.demo.cloud"
    sessions = CloudSessions(smol[2])
    stop = asyncio.Event()
    cloud_bus = await Bus.connect(nats_server.url, "cloud")
    cloud_task = asyncio.create_task(serve_cloud(cloud_bus, subject, sessions, stop))
    device_bus = await Bus.connect(nats_server.url, "device")
    loop = asyncio.get_running_loop()
    try:
        async with serving(smol, lambda _: BusCloud(device_bus, subject, loop)) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
            whole = await client.chat.completions.create(
                model=MODEL,
                messages=QUESTION,
                max_tokens=24,
                temperature=0,  # type: ignore[arg-type]
            )
            assert whole.choices[0].message.content == full_greedy_answer(smol, 24)
        assert sessions.sessions == {}  # the device released its sequence
    finally:
        stop.set()
        await cloud_task
        await device_bus.drain()
        await cloud_bus.drain()
