"""Running a benchmark's method as a resource, the way ``edgeloom run FILE`` does.

Benchmarks build the resource a user would write, and :func:`run_job` hands it to the local
runner (:func:`edgeloom.local.runner.run_file`): validated, its roles started (one process per
role, or ``in_process``), its ``JobResult`` returned and ``result.json`` written. Figures come
from that result, so a benchmark measures exactly what users run.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
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
