"""PruneJob role: ``pruner`` loads a model, prunes it with the method the spec names,
measures it before and after, and saves the pruned model.

The algorithms live in :mod:`edgeloom.algos.comp`; this package only prepares data, reports
progress and moves artifacts.
"""

from edgeloom.apps.comp import pruner

ROLES = {"pruner": pruner.run}
