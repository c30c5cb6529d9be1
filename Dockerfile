# syntax=docker/dockerfile:1
# The Symphony image: one venv at /opt/symphony/venv (the same path the systemd
# units use), run as uid/gid 10001, entry point `symphony`. The Kubernetes
# manifests (k8s/) pass the subcommand: `sidecar`, `forwarder`, `relayer`,
# `repair`. No secrets are baked in: keys, the database URL and the object
# store credentials come from Kubernetes Secrets at run time.
#
#   docker build -t symphony:0.1.0 .

# -- build: compilers for the journal's C core (cffi API mode, built at install)
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/symphony/venv
WORKDIR /src
# .dockerignore keeps the context to the sources pip needs (no .git, no venv,
# no tests); pyproject.toml decides which packages are installed.
COPY . .
# A regular (non-editable) install: the venv is self-contained and copied whole.
RUN /opt/symphony/venv/bin/pip install . \
 && /opt/symphony/venv/bin/symphony --version

# -- runtime: no compiler, no source tree, no root
FROM python:3.11-slim
RUN groupadd --system --gid 10001 symphony \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/symphony --shell /usr/sbin/nologin symphony
COPY --from=build /opt/symphony/venv /opt/symphony/venv
# Assertions are invariant checks: PYTHONOPTIMIZE is never set.
ENV PATH=/opt/symphony/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/symphony
ENTRYPOINT ["/opt/symphony/venv/bin/symphony"]
CMD ["--help"]
