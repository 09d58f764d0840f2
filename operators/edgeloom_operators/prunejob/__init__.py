"""PruneJob: one pruner Job on a cloud node."""

from edgeloom_operators.prunejob.render import KIND, render

KEEPS_RUN_STATE = False
"""Outputs belong to the user; nothing is deleted from JetStream."""
HAS_WORKERS = False

__all__ = ["HAS_WORKERS", "KEEPS_RUN_STATE", "KIND", "render"]
