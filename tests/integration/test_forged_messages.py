"""Forged messages against a SplitTrainingJob whose roles run as real processes, each with its
own identity (the users ``edgeloom run`` and the operator mint), on a nats-server in operator
mode.

Before per-role identities, one forged ``DropWorkers`` on ``control`` failed the job, a forged
``stop`` ended a worker, and a forged ``JobResult`` after the real one made the runner report
the forgery. Now the attacker holds real credentials (a worker's of this job, a coordinator's
of another job) and the server refuses every one of those messages; the job finishes with its
own result.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from edgeloom.api.messages import DropWorkers, JobResult
from edgeloom.apps.mergesfl.messages import Stop
from edgeloom.local.nats_server import NatsServer
from edgeloom.local.runner import RunNats, _spawn, load_and_validate, stop_all
from edgeloom.runtime.bus import Bus, Message, NatsAccess
from edgeloom.runtime.natsauth import Authority, role_permissions
from edgeloom_testkit.kinds.splittraining import write_split_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def _attack(prefix: str, attackers: dict[str, NatsAccess], inbox: dict[str, str]) -> dict:
    """Send every forgery once per attacker; the server's refusals per attacker."""
    forged_result = JobResult(succeeded=True, message="forged", status={"phase": "Succeeded"})
    refused: dict[str, int] = {}
    for who, access in attackers.items():
        errors: list[str] = []
        bus = await Bus.connect(access, f"attacker-{who}", inbox_prefix=inbox[who])

        async def record(err: Exception, into: list[str] = errors) -> None:
            into.append(str(err))

        bus.nc._error_cb = record  # nats-py's error callback: permission violations land here
        await bus.publish(f"{prefix}.control", DropWorkers(workers=[0, 1, 2], reason="forged"))
        await bus.publish(f"{prefix}.worker.0", Stop())
        await bus.publish(f"{prefix}.result", forged_result)
        await bus.publish(f"{prefix}.status", '{"phase": "Succeeded"}')
        await bus.nc.flush()
        await asyncio.sleep(0.3)
        refused[who] = sum("permissions violation" in e.lower() for e in errors)
        await bus.drain()
    return refused


async def _run(job: Path, server: NatsServer, run_dir: Path) -> tuple[dict, list[JobResult], dict]:
    info, resource = load_and_validate(job)
    resource.metadata.uid = "run-1"
    meta = resource.metadata
    access = RunNats.embedded(server, info, resource, run_dir)
    # another job's coordinator, with real credentials of its own
    other = role_permissions(info, "default", "other-job", "server")
    other_creds = run_dir / "nats" / "other.creds"
    other_creds.write_text(server.authority.issuer.creds("default/other-job/server", other))  # type: ignore[union-attr]
    prefix = f"edgeloom.{meta.namespace}.splittrainingjob.{meta.name}"

    watcher = await Bus.connect(access.runner, "watcher")
    results: list[JobResult] = []
    rounds: asyncio.Queue[int] = asyncio.Queue()

    async def on_result(message: Message) -> None:
        results.append(message.parse(JobResult))

    async def on_status(message: Message) -> None:
        await rounds.put(json.loads(message.envelope_json).get("progress", {}).get("round") or 0)

    await watcher.subscribe(f"{prefix}.result", on_result)
    await watcher.subscribe(f"{prefix}.status", on_status)
    procs = [
        _spawn(job, r.name, i, access.roles[r.name], run_dir, "run-1")
        for r in info.roles
        for i in range(r.replicas(resource.spec))
    ]
    try:
        while await asyncio.wait_for(rounds.get(), 120) < 1:
            pass
        refused = await _attack(
            prefix,
            {"worker": access.roles["worker"], "other-job": NatsAccess(server.url, other_creds)},
            {
                "worker": f"_INBOX.default.splittrainingjob.{meta.name}.worker",
                "other-job": "_INBOX.default.splittrainingjob.other-job.server",
            },
        )
        server_proc = next(p for p in procs if p.role == "server")
        deadline = time.monotonic() + 180
        while server_proc.popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert server_proc.popen.poll() == 0, server_proc.log_tail(40)
        await asyncio.sleep(0.5)  # a forged result would arrive after the real one
        await watcher.nc.flush()
        return refused, results, {p.name: p.popen.poll() for p in procs}
    finally:
        stop_all(procs)
        await watcher.drain()


def test_forged_control_stop_result_and_status_are_refused_and_the_job_finishes(
    tmp_path: Path,
) -> None:
    job = write_split_job(tmp_path, name="forged", training={"rounds": 4})
    run_dir = tmp_path / "runs" / "forged"
    (run_dir / "logs").mkdir(parents=True)
    with NatsServer(authority=Authority.new()) as server:
        refused, results, exits = asyncio.run(_run(job, server, run_dir))
    assert refused == {"worker": 4, "other-job": 4}  # every forgery refused by the server
    (result,) = results  # one result: the coordinator's own
    assert result.succeeded and result.message != "forged"
    assert result.status["progress"]["participantsDropped"] == 0
    assert result.status["progress"]["round"] == 4
    assert all(code == 0 for code in exits.values()), exits  # no worker was stopped early
