"""One strategy per SplitTrainingJob method, each in its own module, on the federation
coordinator's round loop (:func:`edgeloom.runtime.federation.run_rounds`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeloom.api.kinds.splittraining import SplitMethod
from edgeloom.apps.mergesfl.strategies.common import ServerJob
from edgeloom.apps.mergesfl.strategies.fedavg import FedAvg
from edgeloom.apps.mergesfl.strategies.mergesfl import MergeSFL
from edgeloom.apps.mergesfl.strategies.sfl import SplitLearning
from edgeloom.apps.mergesfl.strategies.splitfed import SplitFed
from edgeloom.runtime.federation import RoundOutcome, Strategy

STRATEGIES: dict[SplitMethod, Callable[[ServerJob], Strategy[Any, Any, RoundOutcome]]] = {
    SplitMethod.MERGESFL: MergeSFL,
    SplitMethod.SPLITFED: SplitFed,
    SplitMethod.SFL: SplitLearning,
    SplitMethod.FEDAVG: FedAvg,
}

__all__ = ["STRATEGIES", "ServerJob"]
