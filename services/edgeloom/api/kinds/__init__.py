"""Importing this package registers every kind."""

from edgeloom.api.kinds import prunejob, splittraining  # noqa: F401
