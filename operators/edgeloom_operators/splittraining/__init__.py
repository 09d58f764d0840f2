"""SplitTrainingJob: a server Job on a cloud node and one Indexed Job per worker group."""

from edgeloom_operators.splittraining.render import KIND, render

__all__ = ["KIND", "render"]
