"""The documentation is generated where it can be, and self-contained.

Goal: docs/configuration.md, which every `--help`, unit and manifest cites,
exists and says exactly what the configuration structs say (a key added,
removed or re-defaulted without regenerating it fails here); and the README
and docs link only to files of this repository that exist (no design file
outside it, no dead relative link, no link to a web page). Method: run
scripts/gen_config_docs.py --check; parse the Markdown links of every README
and docs page and resolve each one against the repository.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import msgspec

from tests.conftest import REPO_ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
MARKDOWN = ["README.md", *(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md")),
            *(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("*/README.md") if not p.parent.name.startswith(".")),
            "journal/FORMAT.md"]


def test_configuration_docs_are_generated_and_fresh() -> None:
    """`gen_config_docs.py --check` passes, and every key of every daemon is in the page."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    from ingress_sidecar.config import SidecarConfig
    from relayer.config import RailConfig, RelayerConfig

    for struct in (SidecarConfig, RelayerConfig, RailConfig):
        for field in msgspec.structs.fields(struct):
            assert f"#### `{field.name}`" in page, field.name
    assert "SYMPHONY_SIDECAR_MIRROR_ENABLED" in page
    assert "(undocumented)" not in page


def test_docs_link_only_inside_the_repository() -> None:
    """Every Markdown link of the README and docs resolves to a file of the repository."""
    checked = 0
    for name in MARKDOWN:
        path = REPO_ROOT / name
        text = path.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, f"{name} cites a file outside the repository"
        for target in LINK.findall(text):
            if target.startswith("#"):
                continue
            assert not re.match(r"^[a-z]+:", target), f"{name}: link outside the repository: {target}"
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            assert resolved.is_relative_to(REPO_ROOT.resolve()), f"{name}: {target} leaves the repository"
            assert resolved.exists(), f"{name}: {target} does not exist"
            checked += 1
    assert checked >= 5
