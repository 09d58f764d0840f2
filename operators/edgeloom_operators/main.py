"""Operator entrypoint: ``kopf run --standalone --all-namespaces -m edgeloom_operators.main``.

Only wiring: one line per kind, plus start-up settings. Adding a kind is a new package with
``KIND``, ``render``, ``KEEPS_RUN_STATE`` and ``HAS_WORKERS`` and one entry in ``KIND_PACKAGES``.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from edgeloom_operators import handlers, jetstream, prunejob, splittraining
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.kube import Kube, connect
from edgeloom_operators.reports import ReportListener

KIND_PACKAGES = (splittraining, prunejob)

for _package in KIND_PACKAGES:
    handlers.register(
        _package.KIND, _package.render, _package.KEEPS_RUN_STATE, _package.HAS_WORKERS
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf settings (annotation storage, our finalizer), the API client, NATS and the
    operator's /metrics."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="edgeloom.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="edgeloom.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # the operator records its own phase events
    settings.persistence.finalizer = handlers.FINALIZER
    # reconciles mostly wait on the API server: run many at once (kopf's default is 5 + CPUs)
    settings.execution.max_workers = 32
    config = OperatorConfig.from_env()
    nc = await jetstream.connect(config)
    handlers.OPERATOR = handlers.Operator(Kube(connect()), config, nc)
    if config.metrics_port is not None:
        handlers.OPERATOR.metrics.factory.serve(config.metrics_port, config.metrics_addr)
    handlers.OPERATOR.refresher.start()
    await ReportListener(handlers.OPERATOR, nc).start()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """Stop refreshing and drain NATS."""
    if handlers.OPERATOR is not None:
        await handlers.OPERATOR.refresher.stop()
        await handlers.OPERATOR.nc.drain()
