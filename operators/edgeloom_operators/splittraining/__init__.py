"""SplitTrainingJob: a server Job on a cloud node and one Indexed Job per worker group, its
JetStream run state deleted with it, and a worker-health loop on Prometheus data."""

from edgeloom_operators.splittraining.plugin import SplitTrainingPlugin

__all__ = ["SplitTrainingPlugin"]
