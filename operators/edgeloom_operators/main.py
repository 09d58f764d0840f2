"""Operator entrypoint: ``kopf run --standalone --all-namespaces -m edgeloom_operators.main``.

Only wiring: the shipped kinds' plugins, registered on kopf's default registry. Adding a kind
is a new package with a :class:`~edgeloom_operators.plugin.KindPlugin` and one entry in
:func:`edgeloom_operators.kinds.default_plugins`.
"""

from __future__ import annotations

import kopf

from edgeloom_operators.handlers import register
from edgeloom_operators.kinds import default_plugins

register(kopf.get_default_registry(), default_plugins())
