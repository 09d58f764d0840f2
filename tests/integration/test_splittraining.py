"""SplitTrainingJob end to end over a real nats-server: every method, processes, faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeloom.api.kinds.splittraining import KIND as SPLIT
from edgeloom.api.messages import JobResult
from edgeloom.local.nats_server import NatsServer
from edgeloom.local.runner import _spawn, run_file, stop_all
from edgeloom.runtime.bus import Bus, Message, NatsAccess
from edgeloom_operators.control import ControlError, drop_workers
from edgeloom_testkit.cli import EDGELOOM, edgeloom_run
from edgeloom_testkit.kinds.splittraining import role_pids, write_split_job

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("method", ["mergesfl", "splitfed", "sfl", "fedavg"])
def test_every_method_trains_in_process(tmp_path: Path, method: str) -> None:
    job = write_split_job(tmp_path, name=f"m-{method}", method=method, training={"rounds": 2})
    result = run_file(job, runs_dir=tmp_path / "runs", show_progress=False, in_process=True)
    assert result.succeeded, result.message
    assert [h["round"] for h in result.history] == [1, 2]
    assert all(0 <= h["accuracy"] <= 1 for h in result.history)
    assert result.history[0]["virtual_time_seconds"] > 0
    assert result.history[-1]["bytes_total"] > result.history[0]["bytes_total"] > 0
    run_dir = tmp_path / "runs" / f"m-{method}"
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["summary"]["method"] == method
    assert (run_dir / "progress.png").stat().st_size > 0
    assert "edgeloom_accuracy_ratio" in (run_dir / "metrics" / "server-0.prom").read_text()
    # one figure for the bytes moved, wherever it is read
    status = saved["status"]
    assert saved["history"][-1]["bytes_total"] == status["progress"]["bytesTotal"]
    assert status["progress"]["bytesTotal"] == saved["summary"]["bytes_total"]


def test_mergesfl_learns_on_digits(tmp_path: Path) -> None:
    job = write_split_job(
        tmp_path,
        name="learns",
        partition={"scheme": "iid"},
        training={"rounds": 8, "iterationsPerRound": 10, "momentum": 0.9},
        # uniform batches: regulated ones follow measured (noisy) compute times
        ablation={"batchRegulation": False},
    )
    result = run_file(job, runs_dir=tmp_path / "runs", show_progress=False, in_process=True)
    accuracies = [h["accuracy"] for h in result.history]
    assert max(accuracies[-3:]) > 0.5  # chance is 0.1
    assert accuracies[-1] > accuracies[0]


def test_cli_in_process_run_writes_one_log_per_role(tmp_path: Path) -> None:
    job = write_split_job(tmp_path, name="inproc", training={"rounds": 2})
    proc = edgeloom_run(job, tmp_path / "runs", "--in-process", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "round 2: accuracy" not in proc.stderr  # the console shows warnings only
    logs = tmp_path / "runs" / "inproc" / "logs"
    assert "round 2: accuracy" in (logs / "server-0.log").read_text()
    worker_log = (logs / "worker-2.log").read_text()
    assert "round 2: accuracy" not in worker_log  # each role's own lines only
    assert sorted(p.name for p in logs.iterdir()) == [
        "server-0.log",
        "worker-0.log",
        "worker-1.log",
        "worker-2.log",
    ]


def test_cli_run_with_one_process_per_role(tmp_path: Path) -> None:
    job = write_split_job(tmp_path, name="procs", training={"rounds": 2})
    proc = edgeloom_run(job, tmp_path / "runs", "--no-progress", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "job succeeded" in proc.stdout and "final_accuracy" in proc.stdout
    logs = sorted(p.name for p in (tmp_path / "runs" / "procs" / "logs").iterdir())
    assert logs == ["server-0.log", "worker-0.log", "worker-1.log", "worker-2.log"]
    assert not role_pids(job, "worker", 0)  # nothing left running


def test_invalid_file_exits_2_names_the_field_and_starts_nothing(tmp_path: Path) -> None:
    job = write_split_job(tmp_path, name="bad", method="sgd", workers=[{"name": "w", "count": -1}])
    proc = edgeloom_run(job, tmp_path / "runs", timeout=60)
    assert proc.returncode == 2
    assert "spec.method" in proc.stderr and "spec.workers[0].count" in proc.stderr
    assert not (tmp_path / "runs").exists()


async def _wait_for_status(
    url: str, name: str, predicate: Callable[[dict], bool], timeout: float = 120
) -> dict:
    """The first status the job publishes that satisfies ``predicate``."""
    bus = await Bus.connect(url, "test-watcher")
    seen: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def on_status(msg: Message) -> None:
        status = json.loads(msg.envelope_json)
        if predicate(status) and not seen.done():
            seen.set_result(status)

    await bus.subscribe(f"edgeloom.default.splittrainingjob.{name}.status", on_status)
    try:
        return await asyncio.wait_for(seen, timeout)
    finally:
        await bus.drain()


async def _wait_for_round(url: str, name: str, round_: int) -> dict:
    return await _wait_for_status(url, name, lambda s: s["progress"].get("round", 0) >= round_)


def _signal_state(pid: int | str = "self") -> dict[str, str]:
    """Blocked, ignored and caught signal masks of a process, from /proc."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(
        line.split(":\t") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt"))
    )


def _start_run(job: Path, url: str, runs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EDGELOOM, "run", str(job), "--nats", url, "--runs-dir", str(runs), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_server_fails_the_run_names_it_and_writes_a_failed_result(tmp_path: Path) -> None:
    job = write_split_job(tmp_path, name="killsrv", training={"rounds": 200})
    with NatsServer() as nats:
        run = _start_run(job, nats.url, tmp_path / "runs")
        asyncio.run(_wait_for_round(nats.url, "killsrv", 1))
        (pid,) = role_pids(job, "server", 0)
        os.kill(pid, signal.SIGKILL)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 1
    assert "role server-0" in err and "exited with code -9" in err
    assert not role_pids(job, "worker", 0)  # the runner stopped the rest
    saved = json.loads((tmp_path / "runs" / "killsrv" / "result.json").read_text())
    assert not saved["succeeded"]
    assert "role server-0" in saved["message"] and "exited with code -9" in saved["message"]
    assert saved["status"]["phase"] == "Failed"
    assert saved["status"]["progress"]["round"] >= 1  # the progress the job had reached


# Passes alone (Ctrl-C stops everything in about 5 s), but in the full suite the runner has twice
# ignored the Ctrl-C until the timeout; not yet understood, see issue 4's session note. Only that
# timeout is tolerated: a run that does exit must still pass every assertion.
@pytest.mark.xfail(raises=subprocess.TimeoutExpired, strict=False, reason="Ctrl-C hang in suite")
def test_killed_worker_is_dropped_a_replacement_rejoins_and_ctrl_c_stops_all(
    tmp_path: Path,
) -> None:
    job = write_split_job(
        tmp_path, name="killwrk", training={"rounds": 10000}, participation={"minWorkers": 2}
    )
    with NatsServer() as nats:
        run = _start_run(job, nats.url, tmp_path / "runs")
        asyncio.run(_wait_for_round(nats.url, "killwrk", 1))
        (pid,) = role_pids(job, "worker", 1)
        os.kill(pid, signal.SIGKILL)
        degraded = asyncio.run(
            _wait_for_status(
                nats.url, "killwrk", lambda s: s["progress"].get("participantsDropped", 0) >= 1
            )
        )
        assert degraded["phase"] == "Degraded"
        assert degraded["progress"]["participantsReady"] == 2  # the job went on without it
        replacement = _spawn(
            job, "worker", 1, NatsAccess(nats.url), tmp_path / "runs" / "killwrk", ""
        )
        healed = asyncio.run(
            _wait_for_status(
                nats.url, "killwrk", lambda s: s["progress"].get("participantsReady") == 3
            )
        )
        assert healed["phase"] == "Running"
        signals = _signal_state(run.pid)  # diagnoses the rare hang below
        run.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            _, err = run.communicate(timeout=60)  # usually 5 s
        except subprocess.TimeoutExpired:
            print(f"runner signal state before Ctrl-C: {signals}; pytest's: {_signal_state()}")
            run.kill()  # its roles die with it (PR_SET_PDEATHSIG)
            stop_all([replacement])
            raise
        stop_all([replacement])
    assert run.returncode == 130, err
    assert "worker-1" in err  # the runner said which role died
    for role, index in [("server", 0), ("worker", 0), ("worker", 2)]:
        assert not role_pids(job, role, index)  # no orphans


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "evicted"])
def test_server_restart_resumes_from_its_checkpoint(tmp_path: Path, stop: signal.Signals) -> None:
    """A crashed or an evicted (SIGTERM) server: the workers stay for its replacement."""
    job = write_split_job(tmp_path, name="resume", training={"rounds": 8}, checkpointInterval=2)
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    with NatsServer() as nats:
        results: list[JobResult] = []

        async def scenario() -> None:
            bus = await Bus.connect(nats.url, "test")

            async def on_result(msg: Message) -> None:
                results.append(msg.parse(JobResult))

            await bus.subscribe("edgeloom.default.splittrainingjob.resume.result", on_result)
            procs = [
                _spawn(job, "worker", i, NatsAccess(nats.url), run_dir, "run-1") for i in range(3)
            ]
            server = _spawn(job, "server", 0, NatsAccess(nats.url), run_dir, "run-1")
            try:
                await _wait_for_round(nats.url, "resume", 3)
                server.popen.send_signal(stop)
                server.popen.wait()
                assert all(p.popen.poll() is None for p in procs)  # nobody told them to stop
                first_log = server.log_path.read_text()
                server.log_path.rename(run_dir / "logs" / "server-0.first.log")
                server = _spawn(job, "server", 0, NatsAccess(nats.url), run_dir, "run-1")
                deadline = time.monotonic() + 180
                while server.popen.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert server.popen.returncode == 0, server.log_tail()
                await bus.nc.flush()
            finally:
                stop_all([*procs, server])
                await bus.drain()
            rounds_done = max(
                int(line.split("round ")[1].split(":")[0])
                for line in first_log.splitlines()
                if ": accuracy" in line
            )
            checkpoint = rounds_done - rounds_done % 2
            assert (
                f"resumed from the checkpoint of round {checkpoint}" in server.log_path.read_text()
            )

        asyncio.run(scenario())
    (result,) = results
    assert result.succeeded
    assert [h["round"] for h in result.history] == list(range(1, 9))


def test_mergesfl_selects_workers_per_round_with_regulated_batches(tmp_path: Path) -> None:
    job = write_split_job(tmp_path, name="select", training={"rounds": 3, "workersPerRound": 2})
    result = run_file(job, runs_dir=tmp_path / "runs", show_progress=False, in_process=True)
    assert [h["participants"] for h in result.history] == [2, 2, 2]
    prom = (tmp_path / "runs" / "select" / "metrics" / "server-0.prom").read_text()
    batches = [
        float(line.rsplit(" ", 1)[1])
        for line in prom.splitlines()
        if line.startswith("edgeloom_batch_size{")
    ]
    assert batches and all(4 <= b <= 32 for b in batches)  # within the spec's bounds


def test_a_dropped_worker_leaves_the_job_and_its_replacement_retires(tmp_path: Path) -> None:
    job = write_split_job(tmp_path, name="drop", training={"rounds": 12})
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    with NatsServer() as nats:
        results: list[JobResult] = []

        async def scenario() -> None:
            bus = await Bus.connect(nats.url, "operator")  # bus.nc: the operator's connection

            async def on_result(msg: Message) -> None:
                results.append(msg.parse(JobResult))

            await bus.subscribe("edgeloom.default.splittrainingjob.drop.result", on_result)
            procs = [_spawn(job, "worker", i, NatsAccess(nats.url), run_dir, "r") for i in range(3)]
            server = _spawn(job, "server", 0, NatsAccess(nats.url), run_dir, "r")
            try:
                await _wait_for_round(nats.url, "drop", 2)
                with pytest.raises(ControlError, match="not in this job"):
                    await drop_workers(bus.nc, SPLIT, "default", "drop", [7], "no such worker")
                dropped = await drop_workers(bus.nc, SPLIT, "default", "drop", [2], "straggler")
                assert dropped == [2]
                procs[2].popen.kill()  # as the operator deletes the pod
                procs[2].popen.wait()
                procs[2].log_path.rename(run_dir / "logs" / "worker-2.first.log")
                replacement = _spawn(job, "worker", 2, NatsAccess(nats.url), run_dir, "r")
                assert replacement.popen.wait(timeout=120) == 0  # told to retire, exits cleanly
                assert "no longer needed" in replacement.log_path.read_text()
                assert server.popen.wait(timeout=240) == 0, server.log_tail()
                await bus.nc.flush()
            finally:
                stop_all([*procs, server])
                await bus.drain()

        asyncio.run(scenario())
    (result,) = results
    assert result.succeeded
    participants = [h["participants"] for h in result.history]
    assert participants[-1] == 2 and participants[0] == 3  # it ran on without worker 2
