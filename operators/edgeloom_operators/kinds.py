"""The kinds this operator reconciles: one plugin per kind, in one list."""

from __future__ import annotations

from edgeloom_operators.hatinferenceservice import HatInferenceServicePlugin
from edgeloom_operators.plugin import KindPlugin
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_operators.splittraining import SplitTrainingPlugin


def default_plugins() -> list[KindPlugin]:
    """A fresh plugin of every shipped kind (what ``edgeloom_operators.main`` registers)."""
    return [SplitTrainingPlugin(), PruneJobPlugin(), HatInferenceServicePlugin()]
