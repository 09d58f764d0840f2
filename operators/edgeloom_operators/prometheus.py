"""A small client of the Prometheus HTTP API (instant queries), for the slow loops."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused the query."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    """Instant queries against ``url`` (``http://prometheus:9090``, optionally a path prefix)."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str) -> list[Sample]:
        """The instant vector ``expr`` evaluates to now.

        Raises
        ------
        PrometheusError
            On a connection failure, an HTTP error, a PromQL error or a non-vector result.
        """
        body = urllib.parse.urlencode({"query": expr}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v1/query",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read(MAX_RESPONSE_BYTES))
        except urllib.error.HTTPError as err:  # PromQL errors come back as 400/422 with JSON
            try:
                detail = json.loads(err.read(64 * 1024)).get("error", err.reason)
            except ValueError:
                detail = err.reason
            raise PrometheusError(f"query {expr!r} failed: {detail}") from None
        except (OSError, ValueError) as err:
            raise PrometheusError(f"Prometheus at {self.url} is unavailable: {err}") from None
        data = payload.get("data") or {}
        if payload.get("status") != "success" or data.get("resultType") != "vector":
            raise PrometheusError(f"query {expr!r}: unexpected answer {str(payload)[:200]}")
        return [Sample(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]
