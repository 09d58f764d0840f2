"""The resource envelope: apiVersion, kind, metadata, spec, status."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

GROUP = "edgeloom.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_NAME_LENGTH = 63
"""The longest ``metadata.name`` edgeloom takes: the name is the value of the
``edgeloom.io/job`` and ``app.kubernetes.io/instance`` labels of every child, and a label value
has at most 63 characters (the children's own names are shortened with a hash to fit)."""
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An RFC 1123 label: lowercase letters, digits and '-', starting and ending with a letter or
digit. A resource's name has no '.': it is a token of the job's NATS subjects."""
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""An RFC 1035 label, the form of a Service's name: an RFC 1123 label starting with a letter."""

_UID = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")

SpecT = TypeVar("SpecT", bound=BaseModel)


class InvalidResource(ValueError):
    """A resource file or object that does not validate; the message names the field."""


def _uid_token(uid: str) -> str:
    if not _UID.fullmatch(uid):
        raise ValueError(
            "must be letters, digits and dashes, starting and ending with a letter or digit, "
            f"such as the UUID Kubernetes assigns; got {uid!r}"
        )
    return uid


Uid = Annotated[str, Field(max_length=63), AfterValidator(_uid_token)]
"""``metadata.uid``: it names the run's state in JetStream (KV keys, object names), so only a
plain token such as a UUID fits."""


class Metadata(BaseModel):
    """The parts of ObjectMeta edgeloom reads; the rest is carried but ignored."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=MAX_NAME_LENGTH, pattern=DNS1123_LABEL)
    namespace: str = Field(default="default", max_length=63, pattern=DNS1123_LABEL)
    generation: int = 1
    uid: Uid | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Resource(BaseModel, Generic[SpecT]):
    """A parsed custom resource of one kind."""

    model_config = ConfigDict(extra="allow")

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: SpecT


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field path as kubectl does: spec.workers[0].count."""
    lines = []
    for e in err.errors():
        path = prefix
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path or '<root>'}: {e['msg']}")
    return "\n".join(lines)


def _as_the_api_server_decodes(value: Any) -> Any:
    """``value`` with every integral float made an int.

    The API server takes an integral number for an integer field (kube-openapi's type check),
    so ``count: 2.0`` is an integer, and ``seed: 1e15`` or ``1e30`` meet the field's bounds,
    whose message then says how large the field may be.
    """
    if isinstance(value, dict):
        return {k: _as_the_api_server_decodes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_the_api_server_decodes(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_resource(obj: Any, spec_model: type[SpecT], kind: str) -> Resource[SpecT]:
    """Validate a resource dict of ``kind`` and return it typed.

    Types are checked as the API server's structural schema checks them: strictly on the
    object's JSON form, so ``count: true`` or ``"5"`` for an integer is refused rather than
    coerced, while an integral number such as ``2.0`` is an integer and ``0.2`` or ``128`` fit a
    ``number`` field.

    Raises
    ------
    InvalidResource
        With one line per invalid field, each naming the field's path.
    """
    if not isinstance(obj, dict):
        raise InvalidResource("<root>: a resource must be a mapping")
    if obj.get("apiVersion") != API_VERSION:
        raise InvalidResource(
            f"apiVersion: expected {API_VERSION!r}, got {obj.get('apiVersion')!r}"
        )
    if obj.get("kind") != kind:
        raise InvalidResource(f"kind: expected {kind!r}, got {obj.get('kind')!r}")
    try:
        # by alias only: a snake_case key in a file would be dropped by Kubernetes, so refuse it
        return Resource[spec_model].model_validate_json(  # type: ignore[valid-type]
            json.dumps(_as_the_api_server_decodes(obj)), strict=True, by_alias=True, by_name=False
        )
    except ValidationError as err:
        raise InvalidResource(format_validation_error(err)) from None
