# syntax=docker/dockerfile:1
# The Symphony image: one venv at /opt/symphony/venv (the same path the systemd
# units use), run as uid/gid 10001, entry point `symphony`. The Kubernetes
# manifests (k8s/) pass the subcommand: `sidecar`, `forwarder`, `relayer`,
# `repair`. No secrets are baked in: keys, the database URL and the object
# store credentials come from Kubernetes Secrets at run time.
#
#   docker build -t symphony:0.1.0 .
#
# Reproducible: the base image is pinned by digest (both stages), and pip
# installs exactly the versions in constraints.txt (PIP_CONSTRAINT applies to
# the build backend too). The `embedded` extra (PostgreSQL binaries for the
# quick start and the tests) is not installed: production connects to a real
# PostgreSQL. To move to a newer base, take the digest of the python:3.11-slim
# index from `docker buildx imagetools inspect python:3.11-slim` and replace
# it in both FROM lines.

# -- build: compilers for the journal's C core (cffi API mode, built at install)
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/constraints.txt
RUN python -m venv /opt/symphony/venv
WORKDIR /src
# .dockerignore keeps the context to the sources pip needs (no .git, no venv,
# no tests); pyproject.toml decides which packages are installed.
COPY . .
# A regular (non-editable) install: the venv is self-contained and copied whole.
# No extras: not `embedded`, not `test`.
RUN /opt/symphony/venv/bin/pip install . \
 && /opt/symphony/venv/bin/symphony --version

# -- runtime: no compiler, no source tree, no root
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
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
