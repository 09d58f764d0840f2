"""How role processes log: one line format, and which role a record came from when several
roles share one process (``edgeloom run --in-process``). Standard library only, so the CLI
can configure logging without importing the runtime."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ROLE_IDENTITY: ContextVar[str | None] = ContextVar("edgeloom_role_identity", default=None)
"""``role-index`` of the role whose task is running (set by ``run_role`` in its own task)."""


class RoleLogFilter(logging.Filter):
    """Passes the records logged by one role's task."""

    def __init__(self, identity: str) -> None:
        super().__init__()
        self.identity = identity

    def filter(self, record: logging.LogRecord) -> bool:
        return ROLE_IDENTITY.get() == self.identity


def role_log_handler(path: Path, identity: str) -> logging.Handler:
    """A file handler that writes one role's records at INFO and above to ``path``."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RoleLogFilter(identity))
    return handler
