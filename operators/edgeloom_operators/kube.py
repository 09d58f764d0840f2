"""The only module that talks to the Kubernetes API (through the official client).

Children are written with server-side apply under one field manager, so re-applying an
unchanged rendering is a no-op and fields other managers own are left alone; status goes
through the status subresource with a merge patch; the operator never writes ``spec``.

Every failed call raises a :class:`KubeError` (:class:`NotFound`, :class:`Conflict`,
:class:`Forbidden`, :class:`Invalid` and its :class:`Immutable`), parsed from the API
server's Status object, so no caller reads HTTP codes or matches message text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from edgeloom.api.registry import KindInfo
from edgeloom.api.resource import API_VERSION
from edgeloom_operators.render import MANAGER

log = logging.getLogger(__name__)

IMMUTABLE_MESSAGE = "field is immutable"
"""How the API server's validation words a change to an immutable field (apimachinery's
``FieldImmutableErrorMsg``); only :func:`error_from_status` reads it."""


@dataclass(frozen=True)
class Cause:
    """One entry of a Status object's ``details.causes``: which field, and why."""

    field: str
    reason: str
    message: str


class KubeError(RuntimeError):
    """A failed API call: the HTTP ``status`` code, the Status ``reason`` and ``message``."""

    def __init__(
        self, status: int, reason: str, message: str, causes: tuple[Cause, ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: a stale resourceVersion, an object that already exists, or a precondition."""


class Forbidden(KubeError):
    """403: RBAC, or an admission rule such as a ResourceQuota, refused the call."""


class Invalid(KubeError):
    """422: the object failed validation; ``causes`` name the fields."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.causes if c.field)


class Immutable(Invalid):
    """422 because the write changes a field that cannot change after creation (a Job's pod
    template, a Deployment's selector); ``fields`` lists them."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.causes if IMMUTABLE_MESSAGE in c.message and c.field)


def error_from_status(code: int, body: Any, reason: str = "") -> KubeError:
    """The :class:`KubeError` for HTTP ``code`` and the response ``body`` (a Status object as
    JSON text or bytes; anything else is kept as the message)."""
    status: dict[str, Any] = {}
    if isinstance(body, bytes | str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        status = parsed if isinstance(parsed, dict) else {}
    message = str(status.get("message") or (body if isinstance(body, str) else "") or reason)
    details = status.get("details") or {}
    causes = tuple(
        Cause(str(c.get("field") or ""), str(c.get("reason") or ""), str(c.get("message") or ""))
        for c in details.get("causes") or []
        if isinstance(c, dict)
    )
    kind: type[KubeError] = {404: NotFound, 409: Conflict, 403: Forbidden, 422: Invalid}.get(
        code, KubeError
    )
    if kind is Invalid and any(IMMUTABLE_MESSAGE in c.message for c in causes):
        kind = Immutable
    return kind(code, str(status.get("reason") or reason), message, causes)


@contextmanager
def _mapped() -> Iterator[None]:
    """Re-raise the client's ApiException (and the dynamic client's subclasses) as KubeError."""
    try:
        yield
    except ApiException as err:
        raise error_from_status(int(err.status or 0), err.body, str(err.reason or "")) from None


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
            with _mapped():
                self._resources[key] = self.dynamic.resources.get(
                    api_version=api_version, kind=kind
                )
        return self._resources[key]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as the operator's field manager.

        Forcing conflicts makes the write conflict-free: no 409 for fields another manager
        touched, no resourceVersion to race on, and create-or-update in one call, so a
        restarted operator adopts existing children instead of failing on them.

        Raises
        ------
        Immutable
            When the change touches a field that cannot change (the object keeps its own).
        """
        api = self._api(obj["apiVersion"], obj["kind"])
        with _mapped():
            written = api.server_side_apply(
                body=obj,
                namespace=obj["metadata"].get("namespace"),
                field_manager=MANAGER,
                force_conflicts=True,
            )
        return dict(written.to_dict())

    def get_resource(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """The resource, or None when it does not exist."""
        try:
            with _mapped():
                found = self._api(API_VERSION, info.kind).get(name=name, namespace=namespace)
        except NotFound:
            return None
        return dict(found.to_dict())

    def list_resources(self, info: KindInfo, namespace: str | None) -> list[dict[str, Any]]:
        """Every resource of the kind in ``namespace`` (None: in all namespaces)."""
        with _mapped():
            items = self._api(API_VERSION, info.kind).get(namespace=namespace)
        return [dict(item.to_dict()) for item in items.items]

    def delete_resource(self, info: KindInfo, namespace: str, name: str) -> None:
        """Delete a resource, its children first (foreground: it is gone once they are, and
        once its finalizers are released); one already gone is fine."""
        try:
            with _mapped():
                self._api(API_VERSION, info.kind).delete(
                    name=name, namespace=namespace, propagation_policy="Foreground"
                )
        except NotFound:
            pass

    def available_replicas(self, namespace: str, name: str) -> int | None:
        """A Deployment's available replicas; None when it does not exist."""
        try:
            with _mapped():
                found = self._api("apps/v1", "Deployment").get(name=name, namespace=namespace)
        except NotFound:
            return None
        return int((found.to_dict().get("status") or {}).get("availableReplicas") or 0)

    def patch_status(
        self, info: KindInfo, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Replace ``.status`` (merge patch on the status subresource; null clears a field)."""
        body = {"status": status}
        with _mapped():
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
        with _mapped():
            items = self._api(api_version, kind).get(namespace=namespace, label_selector=selector)
        return [dict(item.to_dict()) for item in items.items]

    def stop(self, kinds: Sequence[tuple[str, str]], namespace: str, selector: str) -> int:
        """Delete the matching objects of each (apiVersion, kind) with their pods (foreground);
        returns how many of their pods still exist."""
        for api_version, kind in kinds:
            api = self._api(api_version, kind)
            for obj in self.list(api_version, kind, namespace, selector):
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    with _mapped():
                        api.delete(
                            name=obj["metadata"]["name"],
                            namespace=namespace,
                            propagation_policy="Foreground",
                        )
                except NotFound:
                    pass
        return len(self.list("v1", "Pod", namespace, selector))

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret (``data`` base64-encoded, as the API returns it), or None."""
        try:
            with _mapped():
                found = self._api("v1", "Secret").get(name=name, namespace=namespace)
        except NotFound:
            return None
        return dict(found.to_dict())

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create an Opaque Secret from plain-text ``data``; one that exists already is kept
        (:class:`Conflict` is not raised: a concurrent creator won)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": data,
        }
        try:
            with _mapped():
                self._api("v1", "Secret").create(body=body, namespace=namespace)
        except Conflict:
            pass

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into a pod's."""
        with _mapped():
            self._api("v1", "Pod").patch(
                body={"metadata": {"annotations": annotations}},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=MANAGER,
            )

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod (its Job or ReplicaSet starts a replacement); one already gone is fine."""
        try:
            with _mapped():
                self._api("v1", "Pod").delete(name=name, namespace=namespace)
        except NotFound:
            pass

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
            with _mapped():
                self._api("v1", "Event").create(body=event, namespace=meta["namespace"])
        except KubeError as err:  # events are best effort, never fail a reconcile
            log.warning("could not record event %s on %s: %s", reason, meta["name"], err.reason)
