"""The operator's settings, read once from its environment (set by the Helm chart)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    """Where job pods find NATS and which image they run.

    Parameters
    ----------
    nats_url
        NATS URL that job pods connect to (and the operator, for status reports).
    nats_user, nats_password
        NATS credentials; copied into each job's Secret, never logged.
    services_image, image_pull_policy
        Image of the role pods (``edgeloom serve``) and its pull policy.
    """

    nats_url: str
    nats_user: str | None = None
    nats_password: str | None = None
    services_image: str = "ghcr.io/edgeloom/edgeloom-services:0.1.0"
    image_pull_policy: str = "IfNotPresent"

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """Read EDGELOOM_NATS_URL (required), EDGELOOM_NATS_USER / _PASSWORD,
        EDGELOOM_SERVICES_IMAGE and EDGELOOM_SERVICES_IMAGE_PULL_POLICY."""
        url = os.environ.get("EDGELOOM_NATS_URL")
        if not url:
            raise RuntimeError("EDGELOOM_NATS_URL is not set: the operator needs a NATS server")
        defaults = cls(nats_url=url)
        return cls(
            nats_url=url,
            nats_user=os.environ.get("EDGELOOM_NATS_USER") or None,
            nats_password=os.environ.get("EDGELOOM_NATS_PASSWORD") or None,
            services_image=os.environ.get("EDGELOOM_SERVICES_IMAGE", defaults.services_image),
            image_pull_policy=os.environ.get(
                "EDGELOOM_SERVICES_IMAGE_PULL_POLICY", defaults.image_pull_policy
            ),
        )

    def __repr__(self) -> str:  # never print a password, nor one inside the URL
        url = re.sub(r"//[^@/]*@", "//***@", self.nats_url)
        return f"OperatorConfig(nats_url={url!r}, services_image={self.services_image!r})"
