"""The Dockerfile: the image the manifests run.

Method: read the Dockerfile (no container engine runs in CI here) and check the
properties the manifests and the security review rely on: python:3.11-slim
pinned by digest, the constraints file used for every install, no extras,
compilers only in the build stage, the venv at the path the systemd units use,
a numeric non-root user equal to the manifests' uid, and nothing secret.
"""

from __future__ import annotations

import re

from tests.ops.ops_files import REPO_ROOT, VENV_SYMPHONY

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _stages() -> list[str]:
    body = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    return ["FROM" + part for part in re.split(r"^FROM", body, flags=re.MULTILINE)[1:]]


def test_two_stages_on_python_311_slim() -> None:
    """Goal: the compiler stays in the build stage; the runtime is slim."""
    build, runtime = _stages()
    digest = re.match(r"FROM python:3\.11-slim@(sha256:[0-9a-f]{64}) AS build\n", build)
    assert digest, "the build stage's base is pinned by digest"
    assert runtime.startswith(f"FROM python:3.11-slim@{digest[1]}\n"), "both stages on the same pinned base"
    assert "build-essential" in build
    assert "build-essential" not in runtime and "apt-get install" not in runtime
    assert "COPY --from=build /opt/symphony/venv /opt/symphony/venv" in runtime


def test_runs_as_the_manifests_user() -> None:
    """Goal: the image runs as uid/gid 10001, the uid the manifests and the journal owner use."""
    runtime = _stages()[-1]
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert f'ENTRYPOINT ["{VENV_SYMPHONY}"]' in runtime


def test_no_secrets_baked_in() -> None:
    """Goal: no credential is passed at build time or stored in the image."""
    for line in DOCKERFILE.splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|KEY|DATABASE_URL)", line.upper()), line
    assert "PYTHONOPTIMIZE" not in DOCKERFILE.replace("PYTHONOPTIMIZE is never set", "")
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".symphony", "tests"):
        assert path in ignored


def test_pinned_installs_without_the_embedded_database() -> None:
    """Goal: the image installs exactly constraints.txt (build backend included) and no
    extra: neither the embedded PostgreSQL nor the test tools reach production."""
    build = _stages()[0]
    assert "PIP_CONSTRAINT=/src/constraints.txt" in build
    installs = re.findall(r"pip install ([^\n\\]+)", build)
    assert installs == [". "] or installs == ["."], installs
    assert "[" not in "".join(installs), "no extras in the image"
    assert "constraints.txt" not in (REPO_ROOT / ".dockerignore").read_text().split()
