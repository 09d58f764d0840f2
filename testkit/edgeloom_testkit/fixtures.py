"""pytest fixtures that start real services on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloom.local.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free port, max_payload 1 MiB to force chunking."""
    with NatsServer(max_payload=1024 * 1024, store_dir=tmp_path / "js") as server:
        yield server


@pytest.fixture(scope="session")
def tiny_llama_quick() -> Path:
    """edgeloom's quick tiny Llama, trained on first use and cached (about a minute)."""
    from edgeloom.models.tiny_llama import build_tiny_llama

    return build_tiny_llama("quick", progress=False)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct, converted from its GGUF on first use and cached (about a minute)."""
    from edgeloom.models.smollm2 import build_smollm2

    return build_smollm2()
