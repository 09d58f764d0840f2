"""SplitTrainingJob roles under attack and after losing every process, over a real nats-server.

The attacker is a plain NATS client, as anyone who reaches an unauthenticated server is: it
joins with a forged zero-label worker, answers a Forward request before the real worker does
with features of the wrong shape, and replays a Load it overheard. The job must finish, with
only the round the forged reply hit short of a worker. The other test kills every role after a
checkpoint and restarts them all under the same run id: the job resumes from the checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
import torch

from edgeloom.api.device import DeviceProfile
from edgeloom.api.messages import JobResult, JoinAck
from edgeloom.apps.mergesfl.messages import Join, Timing
from edgeloom.local.nats_server import NatsServer
from edgeloom.local.runner import RoleProcess, _spawn, stop_all
from edgeloom.runtime.bus import Bus, Message, NatsAccess, RemoteError
from edgeloom_testkit.kinds.splittraining import write_split_job

pytestmark = pytest.mark.integration

ROUNDS = 4
FORGED_ROUND = 1
"""The round (0-based) whose first Forward to worker 2 the attacker answers first."""
REPLAY_ROUND = 2
"""The round (0-based) right after whose Load to worker 0 the attacker replays round 0's."""
FAR = {"rttSeconds": 0.5}
DEADLINE = {"roundDeadlineSeconds": 120}
"""Generous: a worker's first Load imports torch's optimiser machinery, slow on a busy host."""


def _subject(name: str, *channel: str) -> str:
    return ".".join(["edgeloom.default.splittrainingjob", name, *channel])


async def _results(bus: Bus, name: str) -> list[JobResult]:
    results: list[JobResult] = []

    async def on_result(msg: Message) -> None:
        results.append(msg.parse(JobResult))

    await bus.subscribe(_subject(name, "result"), on_result)
    return results


async def _wait_for_round(bus: Bus, name: str, round_: int, timeout: float = 180) -> None:
    reached = asyncio.Event()

    async def on_status(msg: Message) -> None:
        if json.loads(msg.envelope_json)["progress"].get("round", 0) >= round_:
            reached.set()

    sub = await bus.subscribe(_subject(name, "status"), on_status)
    try:
        await asyncio.wait_for(reached.wait(), timeout)
    finally:
        await sub.unsubscribe()


async def _wait_for_exit(proc: RoleProcess, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while proc.popen.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert proc.popen.returncode is not None, f"{proc.name} still running:\n{proc.log_tail()}"
    return proc.popen.returncode


class Attacker:
    """Overhears worker 0's and worker 2's commands and strikes in the chosen rounds."""

    def __init__(self, bus: Bus, name: str) -> None:
        self.bus, self.name = bus, name
        self.first_load: Message | None = None
        self.replay_answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.forged = False

    async def start(self) -> None:
        await self.bus.subscribe(_subject(self.name, "worker", "0"), self._on_worker_0)
        await self.bus.subscribe(_subject(self.name, "worker", "2"), self._on_worker_2)

    async def _on_worker_0(self, msg: Message) -> None:
        command = json.loads(msg.envelope_json)
        if command["op"] != "load":
            return
        if self.first_load is None:
            self.first_load = msg
        elif command["round"] == REPLAY_ROUND and not self.replay_answer.done():
            old = self.first_load
            try:
                await self.bus.request(msg.subject, old.envelope_json, old.tensors, timeout=10)
                self.replay_answer.set_result("accepted")
            except RemoteError as err:
                self.replay_answer.set_result(str(err))

    async def _on_worker_2(self, msg: Message) -> None:
        command = json.loads(msg.envelope_json)
        if command["op"] == "forward" and command["round"] == FORGED_ROUND and not self.forged:
            self.forged = True  # the real worker's reply comes second and is ignored
            wrong = {"features": torch.zeros(4, 3), "labels": torch.zeros(4, dtype=torch.int64)}
            await self.bus.respond(msg, Timing(samples=4), wrong)

    async def join_with_zero_label_counts(self) -> JoinAck:
        forged = Join(index=1, samples=40, label_counts=[0] * 10, profile=DeviceProfile())
        reply = await self.bus.request(_subject(self.name, "join"), forged, timeout=10)
        return reply.parse(JoinAck)


def test_forged_join_forged_reply_and_replayed_load_do_not_end_the_job(tmp_path: Path) -> None:
    name = "attacked"
    job = write_split_job(
        tmp_path,
        name=name,
        training={"rounds": ROUNDS},
        checkpointInterval=ROUNDS,
        participation=DEADLINE,
        # worker 2 is far away: its real replies come a quarter second late, the forged first
        emulation="sleep",
        workers=[{"name": "near", "count": 2}, {"name": "far", "count": 1, "profile": FAR}],
    )
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)

    async def scenario() -> tuple[list[JobResult], JoinAck, Attacker, str]:
        bus = await Bus.connect(nats.url, "attacker")
        results = await _results(bus, name)
        attacker = Attacker(bus, name)
        await attacker.start()
        procs = [_spawn(job, "worker", i, NatsAccess(nats.url), run_dir, "r") for i in range(3)]
        server = _spawn(job, "server", 0, NatsAccess(nats.url), run_dir, "r")
        try:
            await _wait_for_round(bus, name, 1)  # MergeSFL plans from label counts from now on
            ack = await attacker.join_with_zero_label_counts()
            assert await _wait_for_exit(server) == 0, server.log_tail(40)
            await bus.nc.flush()
            await asyncio.wait_for(attacker.replay_answer, 10)
        finally:
            stop_all([*procs, server])
            await bus.drain()
        return results, ack, attacker, server.log_path.read_text()

    with NatsServer() as nats:
        results, ack, attacker, server_log = asyncio.run(scenario())
    assert not ack.accepted and "label counts" in ack.reason
    assert attacker.forged
    assert "stale" in attacker.replay_answer.result()  # refused, not obeyed
    (result,) = results
    assert result.succeeded, result.message
    assert [h["round"] for h in result.history] == list(range(1, ROUNDS + 1))
    # only the round whose reply was forged went on without worker 2; the replay cost nothing
    assert [h["participants"] for h in result.history] == [3, 2, 3, 3]
    drops = [line for line in server_log.splitlines() if "dropped from this round" in line]
    assert len(drops) == 1 and "worker 2" in drops[0] and "features" in drops[0], drops
    for worker in range(3):
        worker_log = (run_dir / "logs" / f"worker-{worker}.log").read_text()
        assert "Traceback" not in worker_log, worker_log


def test_every_role_restarted_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    """Every pod of the job lost after a checkpoint; the new server comes up first, resumes,
    and must wait for the new workers to join before it sends them work."""
    name = "allgone"
    job = write_split_job(
        tmp_path, name=name, training={"rounds": 6}, checkpointInterval=2, participation=DEADLINE
    )
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)

    def spawn(role: str, index: int) -> RoleProcess:
        return _spawn(job, role, index, NatsAccess(nats.url), run_dir, "run-1")

    async def scenario() -> tuple[list[JobResult], str, str]:
        bus = await Bus.connect(nats.url, "test")
        results = await _results(bus, name)
        first = [spawn("server", 0), *(spawn("worker", i) for i in range(3))]
        second: list[RoleProcess] = []
        try:
            await _wait_for_round(bus, name, 3)  # past the checkpoint of round 2
            for proc in first:  # every pod lost at once
                proc.popen.send_signal(signal.SIGKILL)
                proc.popen.wait()
            first_log = first[0].log_path.read_text()
            for proc in first:
                proc.log_path.rename(proc.log_path.with_suffix(".first.log"))
            server = spawn("server", 0)
            second.append(server)
            while "resumed from the checkpoint" not in server.log_path.read_text():
                assert server.popen.poll() is None, server.log_tail(40)
                await asyncio.sleep(0.1)
            second += [spawn("worker", i) for i in range(3)]  # rescheduled later
            assert await _wait_for_exit(server) == 0, server.log_tail(40)
            await bus.nc.flush()
        finally:
            stop_all([*first, *second])
            await bus.drain()
        return results, first_log, server.log_path.read_text()

    with NatsServer() as nats:
        results, first_log, second_log = asyncio.run(scenario())
    done_before = max(
        int(line.split("round ")[1].split(":")[0])
        for line in first_log.splitlines()
        if ": accuracy" in line
    )
    checkpoint = done_before - done_before % 2
    assert checkpoint >= 2
    assert f"resumed from the checkpoint of round {checkpoint}" in second_log
    rounds_run = [
        int(line.split("round ")[1].split(":")[0])
        for line in second_log.splitlines()
        if ": accuracy" in line
    ]
    assert rounds_run == list(range(checkpoint + 1, 7))  # not from round 1 again
    (result,) = results
    assert result.succeeded, result.message
    assert [h["round"] for h in result.history] == list(range(1, 7))
