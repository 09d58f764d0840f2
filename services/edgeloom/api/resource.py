"""The resource envelope: apiVersion, kind, metadata, spec, status."""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

GROUP = "edgeloom.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SpecT = TypeVar("SpecT", bound=BaseModel)


class InvalidResource(ValueError):
    """A resource file or object that does not validate; the message names the field."""


class Metadata(BaseModel):
    """The parts of ObjectMeta edgeloom reads; the rest is carried but ignored."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=63, pattern=_DNS1123.pattern)
    namespace: str = Field(default="default", max_length=63, pattern=_DNS1123.pattern)
    generation: int = 1
    uid: str | None = None
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


def parse_resource(obj: Any, spec_model: type[SpecT], kind: str) -> Resource[SpecT]:
    """Validate a resource dict of ``kind`` and return it typed.

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
        return Resource[spec_model].model_validate(  # type: ignore[valid-type]
            obj, by_alias=True, by_name=False
        )
    except ValidationError as err:
        raise InvalidResource(format_validation_error(err)) from None
