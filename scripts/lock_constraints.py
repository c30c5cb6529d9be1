#!/usr/bin/env python3
"""Rewrite constraints.txt: exact pins of the runtime dependency closure.

Run with the project's venv (`.venv/bin/python scripts/lock_constraints.py`):
the versions are the ones installed there, so the image gets exactly what the
tests ran against. Extras (`embedded`, `test`) are left out on purpose; the
build backend (setuptools, cffi, pycparser) is pinned for the image's build.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "constraints.txt"
BUILD_PINS = {"setuptools": "84.2.1"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> dict[str, tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if normalize(name) in seen:
            continue
        dist = metadata.distribution(name)
        seen[normalize(name)] = (dist.metadata["Name"], dist.version)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    return seen


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = [Requirement(r).name for r in project["project"]["dependencies"]]
    roots += [Requirement(r).name for r in project["build-system"]["requires"] if not r.startswith("setuptools")]
    pins = closure(roots)
    header = TARGET.read_text().split("\n\n", 1)[0] if TARGET.exists() else "# constraints"
    lines = [f"{name}=={version}" for _, (name, version) in sorted(pins.items())]
    lines += [f"{name}=={version}" for name, version in sorted(BUILD_PINS.items())]
    return header.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.exit(0)
