"""Helpers shared by the test suite (pytest plugin: ``edgeloom.testing.fixtures``)."""
