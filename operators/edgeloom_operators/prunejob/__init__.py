"""PruneJob: one pruner Job on a cloud node."""

from edgeloom_operators.prunejob.render import KIND, render

__all__ = ["KIND", "render"]
