# syntax=docker/dockerfile:1
# The kit's gateway as a dstack (Phala Cloud) confidential-VM app (issue 15).
#
#   docker build -t REGISTRY/NAME:TAG .
#   docker push REGISTRY/NAME:TAG            # prints the pushed digest
#   kit dstack compose --image REGISTRY/NAME:TAG@sha256:<that digest>
#
# PYTHON_IMAGE is pinned by digest: the multi-arch index digest of python:3.11-slim-bookworm
# that several unrelated public projects pin for that tag (not pulled here: this machine has
# no registry access for images). Check or refresh it where Docker is present with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and override with --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>; a
# value without @sha256: is refused by the check in the first stage.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba

# --- build stage: the kit's wheel and the wheels of its dependencies --------------------------
FROM ${PYTHON_IMAGE} AS build
ARG PYTHON_IMAGE
RUN case "$PYTHON_IMAGE" in *@sha256:????????????????????????????????????????????????????????????????) ;; \
      *) echo "PYTHON_IMAGE must be pinned by digest (REF@sha256:<64 hex>)" >&2; exit 1 ;; esac
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kit ./kit
COPY contract_template ./contract_template
RUN python -m pip wheel --wheel-dir /wheels .

# --- final stage: no compilers, no source tree, no pip cache; runs as a non-root user ---------
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 HOME=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels agent-contract-kit \
    && groupadd --system --gid 10001 kit \
    && useradd --system --uid 10001 --gid kit --home-dir /data --no-create-home kit \
    && mkdir -p /data && chown kit:kit /data
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
# The guest agent's socket (/var/run/dstack.sock) is mounted by the compose file.
CMD ["kit", "gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
