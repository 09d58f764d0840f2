"""An operator that reconciles the shipped kinds and the test-only EchoService:
``kopf run --standalone -m edgeloom_testkit.kinds.echoservice_operator`` (the e2e tier's
service test runs it; the chart's operator never loads it)."""

from __future__ import annotations

import kopf

from edgeloom_operators.handlers import register
from edgeloom_operators.kinds import default_plugins
from edgeloom_testkit.kinds.echoservice import EchoServicePlugin

register(kopf.get_default_registry(), [*default_plugins(), EchoServicePlugin()])
