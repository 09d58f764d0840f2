"""NATS subjects: the one function that names them."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def subject(namespace: str, kind: str, name: str, *channel: str) -> str:
    """``edgeloom.<namespace>.<kind>.<name>.<channel...>``, every token validated.

    Tokens may not contain dots, spaces or wildcards, so one job can never read or write
    another job's subjects by choosing a strange name.
    """
    tokens = (namespace, kind.lower(), name, *channel)
    if not channel:
        raise ValueError("a subject needs at least one channel token")
    for token in tokens:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"invalid subject token {token!r}: use letters, digits, '-' and '_'")
    return "edgeloom." + ".".join(tokens)
