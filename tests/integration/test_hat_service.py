"""``edgeloom run`` of a HatInferenceService: the example's roles as processes over the embedded
nats-server serve the OpenAI-compatible API until Ctrl-C, answer as the full model's greedy
decoding, refuse a bad request and keep serving, and stop every role on SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import yaml

from edgeloom.models.llm import load_model
from edgeloom_testkit.controlplane import free_port
from edgeloom_testkit.tiny_llms import greedy_tokens

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hatinferenceservice-tiny-llama.yaml"
PROMPT = "def read_file(path):\n    "
SERVING = re.compile(r"^device-(\d+) serving at (\S+)$")


@pytest.fixture(scope="module")
def service(tiny_llama_quick: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The example on the quick tiny Llama, with two devices and a short prepare step, run
    by the CLI; yields the URLs the devices announce and the running process."""
    folder = tmp_path_factory.mktemp("hat-service")
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    spec["model"] = {"path": str(tiny_llama_quick)}
    spec["adapter"]["training"]["steps"] = 10
    spec["devices"][0] |= {"count": 2, "port": free_port()}
    resource = folder / "service.yaml"
    resource.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "EDGELOOM_CACHE": str(folder / "cache")}
    command = [sys.executable, "-m", "edgeloom.cli.main", "run", str(resource)]
    process = subprocess.Popen(
        [*command, "--runs-dir", str(folder / "runs"), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    urls: dict[int, str] = {}
    deadline = time.monotonic() + 400
    assert process.stdout is not None
    while len(urls) < 2 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := SERVING.match(line.strip()):
            urls[int(match[1])] = match[2]
    if len(urls) < 2:
        process.kill()
        pytest.fail(f"the devices never announced: {process.communicate()[1][-3000:]}")
    yield {"urls": urls, "process": process, "runs": folder / "runs" / doc["metadata"]["name"]}
    if process.poll() is None:
        process.kill()
        process.wait()


def test_every_device_streams_the_full_models_greedy_answer(
    service: dict, tiny_llama_quick: Path
) -> None:
    model, tokenizer = load_model(tiny_llama_quick)
    prompt = tokenizer(PROMPT)["input_ids"]
    expected = tokenizer.decode(greedy_tokens(model, prompt, 16), skip_special_tokens=True)
    for index, url in service["urls"].items():
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        stream = client.completions.create(
            model="tiny-llama-hat", prompt=PROMPT, max_tokens=16, temperature=0, stream=True
        )
        text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
        assert text == expected, f"device-{index}"


def test_a_bad_request_is_refused_and_serving_goes_on(service: dict) -> None:
    url = service["urls"][0]
    refused = httpx.post(f"{url}/completions", json={"model": "other", "prompt": "x"})
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    answer = httpx.post(
        f"{url}/completions",
        json={"model": "tiny-llama-hat", "prompt": PROMPT, "max_tokens": 4, "temperature": 0},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4


def test_ctrl_c_stops_every_role_and_their_metrics_count_the_requests(service: dict) -> None:
    test_a_bad_request_is_refused_and_serving_goes_on(service)  # one of each on device-0
    process: subprocess.Popen[str] = service["process"]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert "every role was stopped" in stderr
    logs = sorted(p.name for p in (service["runs"] / "logs").iterdir())
    assert logs == ["cloud-0.log", "device-0.log", "device-1.log"]
    metrics = (service["runs"] / "metrics" / "device-0.prom").read_text()
    assert re.search(r'edgeloom_requests_total\{.*outcome="ok".*\} [1-9]', metrics)
    assert re.search(r'edgeloom_requests_total\{.*outcome="refused".*\} [1-9]', metrics)
