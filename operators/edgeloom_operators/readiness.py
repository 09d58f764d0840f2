"""The operator's readiness, and why it is not ready, as ``GET /readyz``.

kopf's ``/healthz`` (the liveness probe) answers as soon as kopf runs; readiness is more: the
operator is ready once it is connected to NATS and hears the jobs' status reports. The
Deployment's readinessProbe reads ``/readyz``: 200 ``ready: <where>``, or 503 and the reason
(``not ready: cannot connect to NATS at tls://...: ...``), which ``kubectl get --raw`` through
the pod's proxy shows as well.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/readyz"


class Readiness:
    """Whether the operator is ready and why (or why not); served by :meth:`serve`."""

    def __init__(self, reason: str = "starting") -> None:
        self.state: tuple[bool, str] = (False, reason)
        """(ready, reason), replaced as a whole so the serving thread never reads half."""
        self._server: ThreadingHTTPServer | None = None

    def set(self, ready: bool, reason: str) -> None:
        self.state = (ready, reason)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/readyz`` on ``addr:port`` (0 picks a free port) in a daemon thread;
        returns the bound port."""
        readiness = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ready, reason = readiness.state
                if self.path.split("?")[0] != PATH:
                    code, text = 404, f"not found: only {PATH} is served here"
                else:
                    code, text = (200, "ready") if ready else (503, "not ready")
                    text = f"{text}: {reason}"
                body = (text + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is not worth a log line

        self._server = ThreadingHTTPServer((addr, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="readyz", daemon=True).start()
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
