"""``edgeloom run`` as a user's process: stop signals and SIGKILL leave nothing running behind."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from edgeloom_testkit.cli import EDGELOOM
from edgeloom_testkit.controlplane import wait_for
from edgeloom_testkit.kinds.splittraining import role_pids, write_split_job

pytestmark = pytest.mark.integration

ROLES = [("server", 0), ("worker", 0), ("worker", 1), ("worker", 2)]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does: it waits only to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _nats_server_of(runner: int) -> tuple[int, Path] | None:
    """The live nats-server ``runner`` started, with its temporary folder; None before."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if comm == "nats-server" and int(rest.split()[1]) == runner and "-c" in args:
            return int(entry.name), Path(args[args.index("-c") + 1]).parent
    return None


def _start_running_job(tmp_path: Path, name: str) -> tuple[Path, subprocess.Popen[str], int, Path]:
    """``edgeloom run`` of a long job and its embedded NATS, once every role has started."""
    job = write_split_job(tmp_path, name=name, training={"rounds": 10000})
    run = subprocess.Popen(
        [*EDGELOOM, "run", str(job), "--runs-dir", str(tmp_path / "runs"), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # what SIGKILL leaves is cleaned up
    )
    wait_for(lambda: all(role_pids(job, *role) for role in ROLES), 120, "every role")
    found = _nats_server_of(run.pid)
    assert found is not None, "no embedded nats-server"
    return job, run, *found


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_stop_signal_stops_the_roles_and_the_embedded_nats(
    tmp_path: Path, stop: signal.Signals
) -> None:
    job, run, nats_pid, nats_dir = _start_running_job(tmp_path, "stopped")
    assert nats_dir.is_dir() and nats_dir.name.startswith("edgeloom-nats-")

    run.send_signal(stop)
    _, err = run.communicate(timeout=60)

    assert run.returncode == 128 + stop, err
    assert f"{stop.name}: every role was stopped" in err
    assert not _alive(nats_pid)
    assert not nats_dir.exists()
    assert not any(role_pids(job, *role) for role in ROLES)


def test_killed_runner_takes_the_embedded_nats_and_the_roles_with_it(tmp_path: Path) -> None:
    job, run, nats_pid, _ = _start_running_job(tmp_path, "killed")

    run.kill()
    run.communicate(timeout=60)

    wait_for(lambda: not _alive(nats_pid), 30, "nats-server to exit")
    wait_for(lambda: not any(role_pids(job, *role) for role in ROLES), 30, "the roles to exit")
