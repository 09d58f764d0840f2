"""Importing this package registers every kind."""

from edgeloom.api.kinds import hatinferenceservice, prunejob, splittraining  # noqa: F401
