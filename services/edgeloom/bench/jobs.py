"""Running a benchmark's method as a resource, the way ``edgeloom run FILE`` does.

Benchmarks build the resource a user would write, and :func:`run_job` hands it to the local
runner (:func:`edgeloom.local.runner.run_file`): validated, its roles started (one process per
role, or ``in_process``), its ``JobResult`` returned and ``result.json`` written. Figures come
from that result, so a benchmark measures exactly what users run. A service has no result:
:func:`serve` runs ``edgeloom run FILE`` until the block ends, and the benchmark measures what
its endpoints answer.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from edgeloom.api.messages import JobResult
from edgeloom.local.runner import run_file


def run_job(
    resource: dict[str, Any],
    nats_url: str,
    runs_dir: Path | None = None,
    in_process: bool = False,
) -> JobResult:
    """Run ``resource`` over the nats-server at ``nats_url`` and return its result.

    Its files (``result.json``, logs, metrics, the pruned model...) go to
    ``runs_dir/<name>/`` as with ``edgeloom run --runs-dir``; without ``runs_dir``, to a
    temporary folder removed afterwards.

    Raises
    ------
    RuntimeError
        When the job does not succeed (a benchmark figure from a failed run means nothing).
    """
    name = resource["metadata"]["name"]
    with contextlib.ExitStack() as stack:
        if runs_dir is None:
            runs_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeloom-")))
        runs_dir.mkdir(parents=True, exist_ok=True)
        path = runs_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(resource, sort_keys=False))
        with contextlib.redirect_stdout(io.StringIO()):  # the run's summary table
            result = run_file(
                path,
                nats_url=nats_url,
                runs_dir=runs_dir,
                show_progress=False,
                in_process=in_process,
            )
    if not result.succeeded:
        raise RuntimeError(f"{resource['kind']} {name} did not succeed: {result.message}")
    return result


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the role processes started inside the block (they
    inherit this process's environment); the previous values come back afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


SERVING = re.compile(r"^(\S+) serving at (\S+)$")
"""How ``edgeloom run`` announces a replica's endpoint (``device-0 serving at URL``)."""


@contextlib.contextmanager
def serve(
    resource: dict[str, Any], replicas: int, runs_dir: Path, timeout_s: float = 1800.0
) -> Iterator[dict[str, str]]:
    """``edgeloom run`` of the service ``resource`` over its own embedded nats-server: yields
    the URL of each of its ``replicas`` serving replicas (by replica name) once all announce,
    and stops every role with Ctrl-C (SIGINT) when the block ends.

    Raises
    ------
    RuntimeError
        When the run ends, or ``timeout_s`` passes, before every replica serves (with the tail
        of what it printed).
    """
    name = resource["metadata"]["name"]
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(resource, sort_keys=False))
    command = [sys.executable, "-m", "edgeloom.cli.main", "run", str(path)]
    log = (runs_dir / f"{name}.log").open("w")
    process = subprocess.Popen(
        [*command, "--runs-dir", str(runs_dir), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        assert process.stdout is not None
        while len(urls) < replicas and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if match := SERVING.match(line.strip()):
                urls[match[1]] = match[2]
        if len(urls) < replicas:
            log.flush()
            tail = (runs_dir / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"{name}: {len(urls)} of {replicas} replicas served:\n{tail}")
        yield urls
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
