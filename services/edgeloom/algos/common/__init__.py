"""Maths every federated system shares: pure torch, no I/O."""

from edgeloom.algos.common.averaging import average_state_dicts, weighted_average

__all__ = ["average_state_dicts", "weighted_average"]
