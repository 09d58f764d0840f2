"""``python -m edgeloom_operators.uninstall``: the chart's pre-delete hook.

``helm uninstall`` deletes the operator; a resource whose finalizer (``edgeloom.io/run-state``)
is still held then has no one to release it, and its pods train on. So before Helm deletes
anything this hook deletes every edgeloom resource in the operator's namespaces and waits until
they are gone, while the operator still runs: it stops their pods and deletes their JetStream
state, then releases the finalizers.

It never removes a finalizer itself: that would leave the run state in JetStream without a
word. When the operator cannot release them (its Deployment has no available replica) it
deletes nothing and fails at once; when they are not gone within ``--timeout`` it fails naming
them. Either way ``helm uninstall`` stops and says so, and ``docs/kubernetes.md`` ("Uninstalling")
has the way out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgeloom.api.registry import KindInfo
from edgeloom.runtime.logs import LOG_FORMAT
from edgeloom_operators.handlers import FINALIZER
from edgeloom_operators.kinds import default_plugins
from edgeloom_operators.kube import Kube, connect

log = logging.getLogger(__name__)

ESCAPE_HATCH = (
    "scale the operator up and run `helm uninstall` again, or release the finalizers by hand "
    "(their JetStream state then stays): kubectl patch <kind> <name> -n <namespace> "
    '--type=merge -p \'{"metadata":{"finalizers":null}}\' (docs/kubernetes.md, Uninstalling)'
)


def _describe(info: KindInfo, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    held = ", finalizers " + ",".join(meta["finalizers"]) if meta.get("finalizers") else ""
    return f"{info.kind} {meta['namespace']}/{meta['name']}{held}"


class Uninstall:
    """Deletes every resource of ``kinds`` in ``namespaces`` (empty: all) and waits for them.

    Parameters
    ----------
    kube
        The API.
    kinds
        The edgeloom kinds the operator reconciles.
    namespaces
        Where it watches them; empty: every namespace.
    operator
        (namespace, name) of the operator's Deployment, which must be available to release
        the finalizers.
    """

    def __init__(
        self,
        kube: Kube,
        kinds: Sequence[KindInfo],
        namespaces: Sequence[str],
        operator: tuple[str, str],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kube = kube
        self.kinds = kinds
        self.namespaces: list[str | None] = [*namespaces] or [None]
        self.operator = operator
        self.clock = clock
        self.sleep = sleep

    def remaining(self) -> list[tuple[KindInfo, dict[str, Any]]]:
        """Every resource still there, with its kind."""
        return [
            (info, obj)
            for info in self.kinds
            for namespace in self.namespaces
            for obj in self.kube.list_resources(info, namespace)
        ]

    def run(self, timeout_s: float, interval_s: float = 2.0) -> bool:
        """Delete and wait; whether every resource is gone (the reasons why not are logged)."""
        left = self.remaining()
        held = [(i, o) for i, o in left if FINALIZER in (o["metadata"].get("finalizers") or [])]
        namespace, name = self.operator
        if held and not self.kube.available_replicas(namespace, name):
            log.error(
                "the operator Deployment %s/%s has no available replica to release the "
                "finalizers of %s; nothing was deleted: %s",
                namespace,
                name,
                "; ".join(_describe(i, o) for i, o in held),
                ESCAPE_HATCH,
            )
            return False
        for info, obj in left:
            meta = obj["metadata"]
            log.info("deleting %s %s/%s", info.kind, meta["namespace"], meta["name"])
            self.kube.delete_resource(info, meta["namespace"], meta["name"])
        deadline = self.clock() + timeout_s
        while left:
            if self.clock() >= deadline:
                log.error(
                    "still there after %g s: %s; %s",
                    timeout_s,
                    "; ".join(_describe(i, o) for i, o in left),
                    ESCAPE_HATCH,
                )
                return False
            self.sleep(interval_s)
            left = self.remaining()
        log.info("no edgeloom resource is left")
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """The hook's command line; exit status 0 once every resource is gone, else 1."""
    parser = argparse.ArgumentParser(prog="python -m edgeloom_operators.uninstall")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="a namespace the operator watches (repeat; none: all namespaces)",
    )
    parser.add_argument(
        "--operator", required=True, help="the operator's Deployment, as NAMESPACE/NAME"
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait at most")
    args = parser.parse_args(argv)
    namespace, _, name = args.operator.partition("/")
    if not (namespace and name):
        parser.error(f"--operator must be NAMESPACE/NAME, not {args.operator!r}")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    kinds = [plugin.info for plugin in default_plugins()]
    done = Uninstall(Kube(connect()), kinds, args.namespace, (namespace, name)).run(args.timeout)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
