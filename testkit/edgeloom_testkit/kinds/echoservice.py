"""EchoService: a test-only service kind, to prove the operator's service path end to end.

No real service kind exists yet; this one is as small as a service can be. Its one role,
``echo``, answers every request on the resource's ``echo`` subject with the request's own
envelope until it is stopped. Its plugin renders it as a Deployment and a Service through
the same hardened renderers a real service kind uses, and reads its state with service
semantics (Available / Progressing / Degraded).

The kind is registered in :mod:`edgeloom.api.registry` only inside its pods
(``python -m edgeloom_testkit.kinds.echoservice``, which then runs ``edgeloom serve``), never
on import, so the shipped kinds' CRDs and checks never see it. An operator that reconciles it
runs ``kopf run -m edgeloom_testkit.kinds.echoservice_operator``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from pydantic import Field

from edgeloom.api.base import ApiModel
from edgeloom.api.registry import KindInfo, PrinterColumn, RoleInfo, register_kind
from edgeloom.api.service import SERVICE_SCALE, ServiceStatus
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.plugin import ServicePlugin
from edgeloom_operators.render import Placement, RoleDeployment, service_children

if TYPE_CHECKING:  # the role's types; the operator process never imports the runtime
    from edgeloom.runtime.bus import Message
    from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)
MODULE = "edgeloom_testkit.kinds.echoservice"
ENTRYPOINT = ("python", "-m", MODULE)
"""The pods' command: this module, which registers the kind and runs ``edgeloom serve``."""
MIN_READY_S = 2
"""A replacement pod counts as available only after this long, so a lost pod is seen."""


class EchoServiceSpec(ApiModel):
    """Desired state of an echo service."""

    replicas: int = Field(default=1, ge=0, le=16, description="Echo pods to run.")


class EchoServiceStatus(ServiceStatus):
    """Status of an echo service."""


KIND = KindInfo(
    kind="EchoService",
    plural="echoservices",
    short_names=("echo",),
    spec_model=EchoServiceSpec,
    status_model=EchoServiceStatus,
    roles=(RoleInfo("echo", "cloud", lambda spec: spec.replicas, subscribes=("echo",)),),
    app_module=MODULE,
    description="A test-only service that echoes requests (edgeloom's test kit).",
    shape="service",
    extra_columns=(
        PrinterColumn(
            "Available",
            ".status.availableReplicas",
            type="integer",
            description="Pods serving.",
        ),
    ),
    scale=SERVICE_SCALE,
)


class EchoServicePlugin(ServicePlugin):
    """One Deployment of ``spec.replicas`` echo pods on cloud nodes, and its Service."""

    info = KIND

    def render(
        self, body: dict[str, Any], spec: EchoServiceSpec, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        echo = RoleDeployment(
            "echo",
            Placement("cloud"),
            replicas=spec.replicas,
            min_ready_seconds=MIN_READY_S,
            requests={"cpu": "50m", "memory": "128Mi"},
            command=ENTRYPOINT,
        )
        return service_children(body, KIND, [echo], config)


async def echo(ctx: RoleContext) -> None:
    """Answer each request on the resource's ``echo`` subject (queue group: one replica
    answers) with its own envelope, until the pod is stopped. A message nobody waits for (no
    reply subject) is logged and dropped."""

    async def answer(message: Message) -> None:
        if not message.reply:
            log.warning("ignoring a message on %s that expects no reply", message.subject)
            return
        await ctx.bus.respond(message, message.envelope_json)

    await ctx.bus.subscribe(ctx.subject("echo"), answer, queue="echo")
    await ctx.stop.wait()


ROLES = {"echo": echo}


def main(argv: list[str] | None = None) -> int:
    """The pod entrypoint: register the kind, then ``edgeloom serve`` (its arguments)."""
    from edgeloom.cli.main import main as edgeloom

    register_kind(KIND)
    return edgeloom(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
