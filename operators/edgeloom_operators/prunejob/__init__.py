"""PruneJob: one pruner Job on a cloud node."""

from edgeloom_operators.prunejob.plugin import PruneJobPlugin

__all__ = ["PruneJobPlugin"]
