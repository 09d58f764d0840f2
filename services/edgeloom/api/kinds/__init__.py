"""Importing this package registers every kind."""

from edgeloom.api.kinds import splittraining  # noqa: F401
