# syntax=docker/dockerfile:1
# The operator image: kopf, the Kubernetes client and edgeloom's API models; no torch.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t edgeloom-operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# pyproject.toml packages both source roots (services/ for edgeloom.api, operators/).
COPY pyproject.toml README.md ./
COPY services ./services
COPY operators ./operators
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 65532 edgeloom \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin edgeloom
COPY --from=build /opt/venv /opt/venv
# HOME=/tmp: the chart mounts an emptyDir there and keeps the root filesystem read-only.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
# The same command as the chart's Deployment (which replaces --all-namespaces when
# operator.watchNamespaces is set).
ENTRYPOINT ["kopf", "run", "--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "-m", "edgeloom_operators.main"]
