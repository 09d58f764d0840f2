"""Scaling a HatInferenceService's cloud replicas on Prometheus data (a slow loop of the
operator), the way a HorizontalPodAutoscaler scales a Deployment.

Every check reads the spec's metric over ``autoscaling.windowSeconds``: the middle requests
waiting per cloud replica (``edgeloom_queue_length``, averaged over the replicas and the window)
or the devices' 95th-percentile time to the first token (``edgeloom_ttft_seconds``). The
recommendation is HPA's: ``ceil(current x value / target)``, unchanged while ``value / target``
is within ``tolerance`` of 1, and kept between ``cloud.minReplicas`` and ``cloud.maxReplicas``.
Scaling up follows the recommendation at once; scaling down goes only to the most replicas
recommended over the last ``scaleDownStabilizationSeconds``, so a brief lull does not shed
replicas that the next burst needs (the hysteresis). Everything here is pure; the loop in
:mod:`edgeloom_operators.hatinferenceservice.plugin` runs the query and applies the result.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from edgeloom.api.kinds.hatinferenceservice import KIND, Autoscaling, ScalingMetric
from edgeloom_operators.prometheus import Sample

SCALING = "CloudScaling"
"""The condition the loop owns: whether the cloud replicas follow the metric."""


def load_query(namespace: str, name: str, autoscaling: Autoscaling) -> str:
    """The one number the replicas are scaled on."""
    window = f"[{autoscaling.window_seconds:g}s]"
    if autoscaling.metric == ScalingMetric.QUEUE_LENGTH:
        sel = f'namespace="{namespace}",kind="{KIND.kind}",name="{name}",role="cloud"'
        return f"avg(avg_over_time(edgeloom_queue_length{{{sel}}}{window}))"
    sel = f'namespace="{namespace}",kind="{KIND.kind}",name="{name}",role="device"'
    return (
        f"histogram_quantile(0.95, sum by (le) (rate(edgeloom_ttft_seconds_bucket{{{sel}}}"
        f"{window})))"
    )


def load_value(samples: list[Sample]) -> float | None:
    """The query's value; None when there is none yet (no series, or NaN: no requests)."""
    if not samples or math.isnan(samples[0].value):
        return None
    return samples[0].value


def recommend(current: int, value: float, autoscaling: Autoscaling, low: int, high: int) -> int:
    """HPA's recommendation for ``current`` replicas at ``value`` of the metric."""
    ratio = value / autoscaling.target
    wanted = current if abs(ratio - 1) <= autoscaling.tolerance else math.ceil(current * ratio)
    return max(low, min(high, wanted))


@dataclass
class Stabilizer:
    """Recent recommendations of one resource: scaling down takes their maximum."""

    history: deque[tuple[float, int]] = field(default_factory=deque)

    def decide(self, now: float, current: int, recommended: int, window_s: float) -> int:
        """The replicas to run now, given this check's recommendation."""
        self.history.append((now, recommended))
        while self.history and self.history[0][0] < now - window_s:
            self.history.popleft()
        if recommended >= current:
            return recommended
        return min(current, max(r for _, r in self.history))
