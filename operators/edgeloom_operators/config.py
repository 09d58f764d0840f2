"""The operator's settings, read once from its environment (set by the Helm chart)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgeloom.api import podenv
from edgeloom.runtime.natsauth import DEFAULT_LIFETIME_S


@dataclass(frozen=True)
class OperatorConfig:
    """Where job pods find NATS and which image they run.

    Parameters
    ----------
    nats_url
        NATS URL that job pods connect to (and the operator, for status reports).
    nats_ca
        PEM of the CA that signed the NATS server's certificate (EDGELOOM_NATS_CA_FILE); the
        operator verifies the server with it and copies it into each job's Secret.
    authority_secret, authority_namespace, create_authority
        The Secret holding the NATS account key that signs every job's credentials
        (:mod:`edgeloom_operators.credentials`); with ``create_authority`` the operator makes
        one when it is missing (the chart's own NATS). No secret: NATS without auth (tests).
    credential_lifetime_s
        How long the credentials minted for a job stay valid.
    services_image, image_pull_policy
        Image of the role pods (``edgeloom serve``) and its pull policy.
    prometheus_url
        Prometheus HTTP API the slow loops read (worker health); None skips them.
    health_interval_s
        Seconds between two worker-health checks of one resource.
    metrics_port, metrics_addr
        Where the operator serves its own ``/metrics``; no endpoint when the port is None.
    readiness_port
        Where it serves ``/readyz`` (on ``metrics_addr``); no endpoint when None.
    pod_name, pod_uid, namespace
        The operator's own Pod, which its events about NATS are recorded on; none without a
        name and uid.
    job_metrics_linger_s
        Seconds job pods keep serving ``/metrics`` after their work is done (at least one
        scrape interval, so the final values are scraped).
    """

    nats_url: str
    nats_ca: str | None = None
    authority_secret: str | None = None
    authority_namespace: str = "default"
    create_authority: bool = False
    credential_lifetime_s: float = DEFAULT_LIFETIME_S
    services_image: str = "ghcr.io/edgeloom/edgeloom-services:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    prometheus_url: str | None = None
    health_interval_s: float = 15.0
    metrics_port: int | None = None
    metrics_addr: str = "0.0.0.0"
    readiness_port: int | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    namespace: str = "default"
    job_metrics_linger_s: float = 35.0

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """Read EDGELOOM_NATS_URL (required), EDGELOOM_NATS_CA_FILE,
        EDGELOOM_NATS_AUTHORITY_SECRET / _NAMESPACE / _CREATE,
        EDGELOOM_NATS_CREDENTIAL_LIFETIME_SECONDS,
        EDGELOOM_SERVICES_IMAGE, EDGELOOM_SERVICES_IMAGE_PULL_POLICY, EDGELOOM_PROMETHEUS_URL,
        EDGELOOM_HEALTH_INTERVAL_SECONDS, EDGELOOM_METRICS_PORT, EDGELOOM_METRICS_ADDR,
        EDGELOOM_READINESS_PORT, EDGELOOM_OPERATOR_POD_NAME / _POD_UID / _NAMESPACE and
        EDGELOOM_JOB_METRICS_LINGER_SECONDS."""
        url = os.environ.get(podenv.NATS_URL)
        if not url:
            raise RuntimeError(f"{podenv.NATS_URL} is not set: the operator needs a NATS server")
        defaults = cls(nats_url=url)
        return cls(
            nats_url=url,
            nats_ca=Path(ca).read_text() if (ca := os.environ.get(podenv.NATS_CA_FILE)) else None,
            authority_secret=os.environ.get("EDGELOOM_NATS_AUTHORITY_SECRET") or None,
            authority_namespace=os.environ.get(
                "EDGELOOM_NATS_AUTHORITY_NAMESPACE", defaults.authority_namespace
            ),
            create_authority=os.environ.get("EDGELOOM_NATS_AUTHORITY_CREATE") == "true",
            credential_lifetime_s=_number(
                "EDGELOOM_NATS_CREDENTIAL_LIFETIME_SECONDS", defaults.credential_lifetime_s
            ),
            services_image=os.environ.get("EDGELOOM_SERVICES_IMAGE", defaults.services_image),
            image_pull_policy=os.environ.get(
                "EDGELOOM_SERVICES_IMAGE_PULL_POLICY", defaults.image_pull_policy
            ),
            prometheus_url=os.environ.get("EDGELOOM_PROMETHEUS_URL") or None,
            health_interval_s=_number(
                "EDGELOOM_HEALTH_INTERVAL_SECONDS", defaults.health_interval_s
            ),
            metrics_port=int(port) if (port := os.environ.get(podenv.METRICS_PORT)) else None,
            metrics_addr=os.environ.get(podenv.METRICS_ADDR) or defaults.metrics_addr,
            readiness_port=int(ready)
            if (ready := os.environ.get("EDGELOOM_READINESS_PORT"))
            else None,
            pod_name=os.environ.get("EDGELOOM_OPERATOR_POD_NAME") or None,
            pod_uid=os.environ.get("EDGELOOM_OPERATOR_POD_UID") or None,
            namespace=os.environ.get("EDGELOOM_OPERATOR_NAMESPACE") or defaults.namespace,
            job_metrics_linger_s=_number(
                "EDGELOOM_JOB_METRICS_LINGER_SECONDS", defaults.job_metrics_linger_s, zero=True
            ),
        )

    def __repr__(self) -> str:  # never print a password, nor one inside the URL
        return (
            f"OperatorConfig(nats_url={redact(self.nats_url)!r}, "
            f"services_image={self.services_image!r}, "
            f"prometheus_url={redact(self.prometheus_url or '')!r})"
        )


def redact(url: str) -> str:
    """``url`` with its user and password replaced by ``***``, fit to log."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def _number(env: str, default: float, zero: bool = False) -> float:
    text = os.environ.get(env)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise RuntimeError(f"{env} must be a number of seconds, not {text!r}") from None
    if value < 0 or (value == 0 and not zero):
        raise RuntimeError(f"{env} must be {'at least 0' if zero else 'positive'}, not {text!r}")
    return value
