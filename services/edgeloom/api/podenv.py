"""Environment variables of a role process, named once for the operator that sets them in a
pod, the local runner that sets them for a subprocess and the role (``edgeloom serve``) that
reads them; and the exit codes it ends with, which the operator's Jobs read.

Torch-free and dependency-free, so the operator image imports it.
"""

from __future__ import annotations

RESOURCE = "EDGELOOM_RESOURCE"
"""Path of the resource file (in a pod: the ConfigMap mounted at /etc/edgeloom)."""
ROLE = "EDGELOOM_ROLE"
"""Which of the kind's roles the process runs."""
INDEX = "EDGELOOM_INDEX"
"""The replica's index, when given outright (otherwise from the two below)."""
INDEX_OFFSET = "EDGELOOM_INDEX_OFFSET"
"""Where a worker group's indices start; ``edgeloom serve`` adds the Job's completion index."""
JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
"""Set by Kubernetes in the pods of an Indexed Job."""
RUN_ID = "EDGELOOM_RUN_ID"
"""Names the run's state in JetStream; in a pod the resource's uid is used instead."""
NATS_URL = "EDGELOOM_NATS_URL"
NATS_CREDS = "EDGELOOM_NATS_CREDS"
"""Path of the role's NATS ``.creds`` file (user JWT + seed; in a pod: from the job's Secret)."""
NATS_CA_FILE = "EDGELOOM_NATS_CA_FILE"
"""Path of the CA certificate that signed the NATS server's (TLS)."""
TERMINATION_MESSAGE_PATH = "EDGELOOM_TERMINATION_MESSAGE_PATH"
"""Where the role writes its final status (the container's terminationMessagePath)."""
METRICS_PORT = "EDGELOOM_METRICS_PORT"
METRICS_ADDR = "EDGELOOM_METRICS_ADDR"
"""Address ``/metrics`` listens on (in a pod: its IP, from the downward API)."""
METRICS_LINGER_SECONDS = "EDGELOOM_METRICS_LINGER_SECONDS"
"""Seconds ``/metrics`` stays up after the work is done, so the final values are scraped."""
WORK_DIR = "EDGELOOM_WORK_DIR"
"""Writable folder for the role's own files, ``edgeloom serve --run-dir`` (default outputs such
as a PruneJob's model without ``output.path``, the final metrics); in a pod an emptyDir, since
the root filesystem is read-only."""
HTTP_ADDR = "EDGELOOM_HTTP_ADDR"
"""Address a role's HTTP API listens on (a HatInferenceService device's endpoint); default
0.0.0.0, the local runner's 127.0.0.1."""
HTTP_PORT_SPREAD = "EDGELOOM_HTTP_PORT_SPREAD"
"""When ``1`` (the local runner, whose replicas share one host), replica ``i`` of a role
listens on its spec's port + ``i``; in a pod each replica has its own address and the port as
given."""
ENDPOINTS_DIR = "endpoints"
"""The folder of a role's run dir where a replica that serves HTTP writes its URL, in a file
named after the replica (``device-0``): the local runner prints them."""

EXIT_INVALID = 2
"""``edgeloom serve``'s exit code when the resource does not validate: no retry can help."""
EXIT_JOB_FAILED = 3
"""``edgeloom serve``'s exit code when the role ended the job with ``JobFailed`` (a missing
model, too few workers): the job's own verdict, so its Job fails at once instead of retrying."""
EXIT_STOPPED = 143
"""128 + SIGTERM, as a shell reports a process ended by SIGTERM: stopped before its work was
done (an evicted or deleted pod), so a Job replaces the pod."""
DETERMINISTIC_EXIT_CODES = (EXIT_INVALID, EXIT_JOB_FAILED)
"""Exit codes on which a role's Job fails on the first attempt (its ``podFailurePolicy``)."""
