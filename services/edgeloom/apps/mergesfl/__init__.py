"""SplitTrainingJob roles: ``server`` (top model, control, aggregation) and ``worker``.

The algorithms live in :mod:`edgeloom.algos.mergesfl`; these modules only move tensors between
them over the bus and account device time.
"""

from edgeloom.apps.mergesfl import server, worker

ROLES = {"server": server.run, "worker": worker.run}
