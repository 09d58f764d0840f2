"""SplitTrainingJob: a server Job on a cloud node and one Indexed Job per worker group."""

from edgeloom_operators.splittraining.render import KIND, render

KEEPS_RUN_STATE = True
"""The server's KV state and checkpoint are deleted with the resource."""
HAS_WORKERS = True
"""Worker pods are checked on Prometheus data (:mod:`edgeloom_operators.workers`)."""

__all__ = ["HAS_WORKERS", "KEEPS_RUN_STATE", "KIND", "render"]
