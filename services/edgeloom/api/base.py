"""Base classes shared by every resource model.

Python attributes are snake_case; the wire and YAML form is camelCase, as Kubernetes expects.
Every field must carry a description: the CRD generator refuses a field without one, so that
``kubectl explain`` is always useful.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A strict model with camelCase aliases; unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON-compatible dict that Kubernetes and NATS messages carry."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
