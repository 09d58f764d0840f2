"""The only module that talks to the Kubernetes API (through the official client).

Children are written with server-side apply under one field manager, so re-applying an
unchanged rendering is a no-op and fields other managers own are left alone; status goes
through the status subresource with a merge patch; the operator never writes ``spec``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from edgeloom.api.registry import KindInfo
from edgeloom_operators.render import API_VERSION, MANAGER

log = logging.getLogger(__name__)

ApiError = ApiException
"""What every failed API call raises (``status``, ``reason``, ``body``)."""


def connect() -> DynamicClient:
    """A client from the in-cluster service account, else from KUBECONFIG."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return DynamicClient(client.ApiClient())


class Kube:
    """Typed operations the handlers need, over one dynamic client."""

    def __init__(self, dynamic: DynamicClient) -> None:
        self.dynamic = dynamic
        self._resources: dict[tuple[str, str], Any] = {}

    def _api(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as the operator's field manager.

        Forcing conflicts makes the write conflict-free: no 409 for fields another manager
        touched, no resourceVersion to race on, and create-or-update in one call, so a
        restarted operator adopts existing children instead of failing on them.
        """
        api = self._api(obj["apiVersion"], obj["kind"])
        return api.server_side_apply(
            body=obj,
            namespace=obj["metadata"].get("namespace"),
            field_manager=MANAGER,
            force_conflicts=True,
        ).to_dict()

    def get_resource(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """The resource, or None when it does not exist."""
        try:
            return self._api(API_VERSION, info.kind).get(name=name, namespace=namespace).to_dict()
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch_status(
        self, info: KindInfo, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Replace ``.status`` (merge patch on the status subresource; null clears a field)."""
        body = {"status": status}
        self._api(API_VERSION, info.kind).status.patch(
            body=body,
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            field_manager=MANAGER,
        )

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` matching the label ``selector``."""
        items = self._api(api_version, kind).get(namespace=namespace, label_selector=selector)
        return [item.to_dict() for item in items.items]

    def stop_jobs(self, namespace: str, selector: str) -> int:
        """Delete the matching Jobs with their pods (foreground); returns how many of their
        pods still exist."""
        jobs = self._api("batch/v1", "Job")
        for job in self.list("batch/v1", "Job", namespace, selector):
            if job["metadata"].get("deletionTimestamp"):
                continue
            try:
                jobs.delete(
                    name=job["metadata"]["name"],
                    namespace=namespace,
                    propagation_policy="Foreground",
                )
            except ApiException as err:
                if err.status != 404:
                    raise
        return len(self.list("v1", "Pod", namespace, selector))

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into a pod's."""
        self._api("v1", "Pod").patch(
            body={"metadata": {"annotations": annotations}},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            field_manager=MANAGER,
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod (its Job, if any, starts a replacement); a pod already gone is fine."""
        try:
            self._api("v1", "Pod").delete(name=name, namespace=namespace)
        except ApiException as err:
            if err.status != 404:
                raise

    def event(
        self,
        body: dict[str, Any],
        type: str,
        reason: str,
        message: str,
    ) -> None:
        """Record a core/v1 Event on the resource (shown by ``kubectl describe``)."""
        meta = body["metadata"]
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": MANAGER,
        }
        try:
            self._api("v1", "Event").create(body=event, namespace=meta["namespace"])
        except ApiException as err:  # events are best effort, never fail a reconcile
            log.warning("could not record event %s on %s: %s", reason, meta["name"], err.reason)
