"""Base classes shared by every resource model.

Python attributes are snake_case; the wire and YAML form is camelCase, as Kubernetes expects.
Every field must carry a description: the CRD generator refuses a field without one, so that
``kubectl explain`` is always useful. The parts of a spec are :class:`SpecModel` classes, whose
numbers must be finite as well as in range.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

MAX_SEED = 2**31 - 1
"""The largest seed of any spec: a non-negative int32. Kubernetes' API conventions use int32
and int64 and avoid unsigned types, and int32 stays inside what every consumer takes: numpy's
legacy seeding (uint32), ``torch.manual_seed`` (64 bits) even for derived seeds such as a
worker's ``seed * 100_003 + index``, and ``random.Random``."""


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


class SpecModel(ApiModel):
    """A part of a resource's spec: an :class:`ApiModel` whose numbers must be finite.

    JSON has no inf or nan, so kubectl cannot send them; a local file could (``lrFloor: .inf``),
    and is refused with the field's name. Status and messages stay plain :class:`ApiModel`: a
    measured perplexity may well be inf.
    """

    model_config = ConfigDict(allow_inf_nan=False)
