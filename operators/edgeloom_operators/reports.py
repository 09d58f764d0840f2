"""Status reports from running jobs, over NATS, into ``.status``.

Every job's coordinator publishes its status on ``edgeloom.<ns>.<kind>.<name>.status`` (see
:mod:`edgeloom.runtime.subjects`). The operator subscribes to all of them, validates each
frame (size, framing, the kind's status model), keeps the latest per resource and refreshes
those resources through :class:`edgeloom_operators.refresher.Refresher`, so a chatty job
costs at most one status patch per interval.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from edgeloom.api.registry import KindInfo
from edgeloom.runtime.framing import CodecError, read_envelope
from edgeloom_operators.metrics import OperatorMetrics
from edgeloom_operators.refresher import Key

log = logging.getLogger(__name__)

SUBJECT = "edgeloom.*.*.*.status"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?")  # no dots: a subject token
MAX_REPORT_BYTES = 256 * 1024


def parse_report(
    subject: str, data: bytes, kinds: Mapping[str, KindInfo]
) -> tuple[Key, dict[str, Any]] | None:
    """(resource key, status dict) of a report on ``subject`` of one of ``kinds`` (by singular
    name); None (logged) for anything else."""
    _, namespace, kind, name, _ = subject.split(".")
    info = kinds.get(kind)
    if info is None or not (_DNS_LABEL.fullmatch(namespace) and _DNS_SUBDOMAIN.fullmatch(name)):
        return None  # not a resource this operator reconciles; never used in an API path
    try:
        report = json.loads(read_envelope(data, MAX_REPORT_BYTES))
        info.status_model.model_validate(report)
    except (CodecError, ValueError) as err:
        log.warning("dropping a malformed status report on %s: %s", subject, str(err)[:200])
        return None
    return (namespace, info.kind, name), report


class ReportListener:
    """Subscribes to every job's status subject and hands each valid report of one of
    ``kinds`` to ``accept`` (which keeps the latest per resource and asks for a coalesced
    refresh); counts them in ``metrics``."""

    def __init__(
        self,
        nc: NATS,
        kinds: Mapping[str, KindInfo],
        accept: Callable[[Key, dict[str, Any]], None],
        metrics: OperatorMetrics,
    ) -> None:
        self.nc = nc
        self.kinds = kinds
        self.accept = accept
        self.metrics = metrics

    async def start(self) -> None:
        await self.nc.subscribe(SUBJECT, cb=self._on_report)
        await self.nc.flush()

    async def _on_report(self, msg: Msg) -> None:
        if msg.headers:  # chunked transfers and errors are not status reports
            return
        parsed = parse_report(msg.subject, msg.data, self.kinds)
        outcome = "rejected" if parsed is None else "accepted"
        self.metrics.reports.labels(kind=self._kind(msg.subject), outcome=outcome).inc()
        if parsed is not None:
            self.accept(*parsed)

    def _kind(self, subject: str) -> str:
        """The kind named by a report's subject, or ``unknown`` (keeps the label bounded)."""
        info = self.kinds.get(subject.split(".")[2])
        return info.kind if info is not None else "unknown"
