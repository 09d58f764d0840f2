"""PruneJob: one pruner Job on a cloud node."""

from edgeloom_operators.prunejob.render import KIND, render

KEEPS_RUN_STATE = False
"""Outputs belong to the user; nothing is deleted from JetStream."""

__all__ = ["KEEPS_RUN_STATE", "KIND", "render"]
