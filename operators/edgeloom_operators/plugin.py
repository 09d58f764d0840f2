"""The one typed seam between the shared reconcile loop and each kind.

A kind is a :class:`KindPlugin`: its registration (``info``), how its children are rendered,
what they prove (``outcome``), what it must clean up outside Kubernetes, the slow loops it
needs and its dashboard's own rows. Every hook has a no-op default (KubeRay's plugin style),
and two bases fill in the two shapes of kind: :class:`JobPlugin` (batch Jobs,
Succeeded/Failed) and :class:`ServicePlugin` (a Deployment and a Service,
Available/Progressing/Degraded). The shared loop in
:mod:`edgeloom_operators.handlers` knows neither shape's details, and no kind's details.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloom.api.registry import KindInfo
from edgeloom.api.status import Phase
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.dashboards.panels import KindDashboard
from edgeloom_operators.status import (
    AVAILABLE,
    JOB,
    SERVICE,
    Outcome,
    Semantics,
    deployment_outcome,
    job_outcome,
)

if TYPE_CHECKING:
    from edgeloom_operators.handlers import Operator


@dataclass(frozen=True)
class ChildType:
    """A kind of child whose state decides a resource's outcome (listed on every refresh,
    watched so a change refreshes the resource)."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


JOBS = ChildType("batch/v1", "Job", "jobs")
DEPLOYMENTS = ChildType("apps/v1", "Deployment", "deployments")

Children = Mapping[str, Sequence[dict[str, Any]]]
"""A resource's observed children by kind (``{"Job": [...]}``)."""
LoopCheck = Callable[["Operator", "KindPlugin", dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Loop:
    """A slow loop: ``check(operator, plugin, body)`` of one resource, every
    ``interval(config)`` seconds while its phase is one of ``phases`` (a kopf daemon)."""

    id: str
    check: LoopCheck
    phases: tuple[Phase, ...]
    interval: Callable[[OperatorConfig], float]


class KindPlugin:
    """One kind, behind the hooks the shared reconcile loop calls; every hook has a no-op
    default.

    Attributes
    ----------
    info
        The kind's registration (models, names, roles).
    semantics
        How its phase is read (:data:`~edgeloom_operators.status.JOB` or ``SERVICE``).
    observes
        The child types :meth:`outcome` reads.
    owned_conditions
        Condition types the operator's loops set on it (kept across the resource's reports).
    external_state
        Whether deleting the resource must wait for :meth:`cleanup` (adds the finalizer).
    """

    info: KindInfo
    semantics: Semantics = JOB
    observes: tuple[ChildType, ...] = ()
    owned_conditions: tuple[str, ...] = ()
    external_state: bool = False

    def render(
        self, body: dict[str, Any], spec: Any, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        """Every child of the resource ``body`` with the validated ``spec`` (pure)."""
        return []

    def outcome(self, children: Children) -> Outcome:
        """What the observed children prove (phase, reason, message, ...)."""
        return Outcome()

    async def cleanup(self, operator: Operator, body: dict[str, Any]) -> list[str]:
        """Delete what the resource keeps outside Kubernetes, once its pods are gone; returns
        what was deleted. Raising retries (a bounded number of times)."""
        return []

    def loops(self) -> tuple[Loop, ...]:
        """The slow loops each of its resources gets."""
        return ()

    def dashboard(self) -> KindDashboard:
        """The kind's own rows on its Grafana dashboard; the shared skeleton around them
        (resources and their phase, a job's progress, scrape health, variables, annotations,
        links) comes with every kind (:func:`edgeloom_operators.dashboards.board.kind_board`)."""
        return KindDashboard()


class JobPlugin(KindPlugin):
    """A kind that runs batch Jobs to Succeeded or Failed (job semantics)."""

    semantics = JOB
    observes = (JOBS,)

    def outcome(self, children: Children) -> Outcome:
        return job_outcome(children.get(JOBS.kind, ()))


class ServicePlugin(KindPlugin):
    """A kind that runs Deployments until deleted and reports Available, Progressing or
    Degraded like a Deployment (service semantics)."""

    semantics = SERVICE
    observes = (DEPLOYMENTS,)
    owned_conditions: tuple[str, ...] = (AVAILABLE,)

    def outcome(self, children: Children) -> Outcome:
        return deployment_outcome(children.get(DEPLOYMENTS.kind, ()))


def index(plugins: Iterable[KindPlugin]) -> dict[str, KindPlugin]:
    """The plugins by their kind's singular name (the ``edgeloom.io/kind`` label and subject
    token); a kind given twice is an error."""
    out: dict[str, KindPlugin] = {}
    for plugin in plugins:
        if plugin.info.singular in out:
            raise ValueError(f"kind {plugin.info.kind} has two plugins")
        out[plugin.info.singular] = plugin
    return out
