"""One job reporter for every coordinating role: status, conditions, progress, result.

A coordinator (the SplitTrainingJob server, the PruneJob pruner, ...) owns one
:class:`JobReporter`. It keeps the kind's typed status, sets ``Ready``/``Reconciling``/
``Stalled`` together (:func:`edgeloom.api.status.set_summary_conditions`), publishes every
report on the job's ``status`` subject (and so into the pod's termination message), exports
the progress pair every kind shares (``edgeloom_steps_completed`` / ``edgeloom_steps_planned``,
which one generic stall alert watches) and publishes the final :class:`JobResult` once. No app
writes these by hand.

Roles end a job with :class:`JobFailed`; :meth:`JobReporter.run` turns it (or any other error)
into the Failed status and result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from edgeloom.api.messages import JobResult
from edgeloom.api.status import Phase, Progress, Status, set_summary_conditions
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Status)
Summary = dict[str, float | int | str | bool | None]
History = list[dict[str, float | int | None]]


class JobFailed(RuntimeError):
    """The job cannot reach its goal; the message says why (it becomes ``Ready``'s and
    ``Stalled``'s message and the result's)."""


@dataclass
class Outcome:
    """What a successful job returns to its reporter."""

    message: str
    summary: Summary = field(default_factory=dict)
    history: History = field(default_factory=list)


class JobReporter(Generic[S]):
    """Builds one job's typed status and publishes it; see the module docstring.

    Parameters
    ----------
    ctx
        The coordinating role's context.
    status
        The kind's status model, empty; the reporter fills the shared fields, the role its
        typed results (``reporter.status.final_accuracy = ...``).
    metric_name
        The headline metric of progress and of the result's history.
    planned
        Steps the job plans, when known from the start (exported at once, so a job stalled
        before its first step is seen).
    """

    def __init__(
        self, ctx: RoleContext[Any], status: S, metric_name: str, planned: int | None = None
    ) -> None:
        self.ctx = ctx
        self.status = status
        self.metric_name = metric_name
        self.started = time.monotonic()
        self.status.observed_generation = self.generation
        self.steps = 0
        """Steps completed, as last reported."""
        self._completed = ctx.metrics.gauge(
            "steps_completed", "Steps (rounds, layers, trials) the job has completed."
        )
        self._planned = ctx.metrics.gauge(
            "steps_planned", "Steps the job runs unless it stops early."
        )
        if planned is not None:
            self._planned.set(planned)

    @property
    def generation(self) -> int:
        return self.ctx.resource.metadata.generation

    def wall_time_s(self) -> float:
        """Seconds since the reporter was made (the job's start), as status reports them."""
        return round(time.monotonic() - self.started, 3)

    async def progress(
        self,
        reason: str,
        message: str,
        *,
        steps: int,
        planned: int | None = None,
        phase: Phase = Phase.RUNNING,
        **fields: Any,
    ) -> None:
        """Publish a Running (or Degraded) report after ``steps`` completed steps.

        ``planned`` is the job's total when it knows one; a job that does not (a pruner
        before it has seen the model) plans one step ahead, so the generic stall alert still
        tells a stuck job from a finished one. ``fields`` are :class:`Progress` fields
        (``round``, ``stage``, ``metric_value``, ``bytes_total``...).
        """
        self.resume(steps, **fields)
        self._planned.set(planned if planned is not None else steps + 1)
        await self._publish(phase, reason, message)

    async def _publish(self, phase: Phase, reason: str, message: str) -> None:
        self.status.phase = phase
        self.status.conditions = set_summary_conditions(
            self.status.conditions,
            phase,
            phase == Phase.SUCCEEDED,
            reason,
            message,
            self.generation,
        )
        await self.ctx.report(self.status)

    async def finish(self, succeeded: bool, outcome: Outcome) -> JobResult:
        """Publish the terminal status, then the result on the job's ``result`` subject."""
        phase, reason = (Phase.SUCCEEDED, "Completed") if succeeded else (Phase.FAILED, "Failed")
        if succeeded:  # nothing is left to do: the stall alert must not fire on a linger
            self._planned.set(self.steps)
        self.status.progress.wall_time_seconds = self.wall_time_s()
        await self._publish(phase, reason, outcome.message)
        result = JobResult(
            succeeded=succeeded,
            message=outcome.message,
            status=self.status.to_wire(),
            summary=outcome.summary,
            metric_name=self.metric_name,
            history=outcome.history,
        )
        await self.ctx.bus.publish(self.ctx.subject("result"), result)
        return result

    def resume(self, steps: int, **fields: Any) -> None:
        """Set ``steps`` done and the progress ``fields`` without publishing: a restored
        checkpoint's, shown by the next report (and by a failure's) even before a new step
        completes. :meth:`progress` sets them the same way, then publishes."""
        self.steps = steps
        self._completed.set(steps)
        self.status.progress = Progress(
            metric_name=self.metric_name, wall_time_seconds=self.wall_time_s(), **fields
        )

    async def run(
        self,
        work: Callable[[], Awaitable[Outcome]],
        on_failure: Callable[[str], Outcome] | None = None,
        fatal: tuple[type[BaseException], ...] = (Exception,),
    ) -> Outcome:
        """Run the job's ``work`` and report how it ended.

        A ``fatal`` error ends the job Failed (``Stalled=True``) with its message;
        ``on_failure(message)`` supplies the summary and history a failed job still reports
        (rounds done so far). Errors outside ``fatal`` are not reported as the end of the job:
        a coordinator that keeps state in checkpoints passes ``fatal=(JobFailed,)``, so a
        transient error only restarts its pod (the Job retries it) and the retry resumes.
        Either way the error propagates, so the role exits non-zero.
        """
        try:
            outcome = await work()
        except fatal as err:
            if not isinstance(err, JobFailed):
                log.exception("the job failed")
            message = str(err) or type(err).__name__
            failed = on_failure(message) if on_failure else Outcome(message)
            await self.finish(False, failed)
            raise
        await self.finish(True, outcome)
        return outcome
