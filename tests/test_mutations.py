"""The mutation check: every invariant-breaking mutant in scripts/mutations.toml
is killed by its tests (docs/testing.md, "Mutation check").

Goal: the tests guard the invariants for the right reason; a test that still
passes with the invariant's one line broken is found here. Method: run
scripts/mutate.py (which works in a temporary copy, never in this tree) and
read its verdicts; two small runs show that the runner itself fails on a
surviving mutant and on a list entry that no longer matches the code.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

RUNNER = REPO_ROOT / "scripts" / "mutate.py"
LIST = REPO_ROOT / "scripts" / "mutations.toml"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1800, check=False)


@pytest.mark.slow
def test_every_mutant_is_killed() -> None:
    """Goal: no listed mutant survives, and the list covers invariants 1 to 10.
    Method: run the whole list; each mutant must be reported as killed (positive
    evidence that it ran, so the check cannot pass with an empty run)."""
    mutants = tomllib.loads(LIST.read_text(encoding="utf-8"))["mutant"]
    assert {str(n) for n in range(1, 11)} <= {m["invariant"] for m in mutants}
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    killed = re.findall(r"^(\S+)\s+invariant \S+\s+killed", result.stdout, re.MULTILINE)
    assert sorted(killed) == sorted(m["id"] for m in mutants), result.stdout


def _write_list(path: Path, original: str, replacement: str, test: str) -> Path:
    path.write_text(
        "[[mutant]]\n"
        'id = "probe"\ninvariant = "0"\nwhat = "a change the tests cannot see"\n'
        'file = "forwarder/rows.py"\n'
        f"original = {json.dumps(original)}\nreplacement = {json.dumps(replacement)}\ntests = [{json.dumps(test)}]\n",
        encoding="utf-8")
    return path


def test_a_surviving_mutant_fails_the_run(tmp_path: Path) -> None:
    """Goal: the runner reports a mutant its tests do not notice. Method: weaken
    an argument assertion that the chosen test never reaches the edge of."""
    listing = _write_list(tmp_path / "list.toml", "assert prev_seq >= 0", "assert prev_seq >= -1",
                          "tests/forwarder/test_rows.py::test_sound_chain_passes_whole")
    result = _run("--list", str(listing))
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^probe\s+invariant 0\s+SURVIVED", result.stdout, re.MULTILINE), result.stdout
    assert "probe survived" in result.stderr


def test_a_line_that_moved_stops_the_run(tmp_path: Path) -> None:
    """Goal: a list entry whose line is gone (or ambiguous) is an error, never a
    silent pass. Method: an original that is not in the file, then one that
    occurs several times."""
    test = "tests/forwarder/test_rows.py::test_sound_chain_passes_whole"
    missing = _run("--check", "--list", str(_write_list(tmp_path / "a.toml", "no such line", "x = 1", test)))
    assert missing.returncode == 2 and "occurs 0 times" in missing.stderr, missing.stderr
    repeated = _run("--check", "--list", str(_write_list(tmp_path / "b.toml", "@property", "@staticmethod", test)))
    assert repeated.returncode == 2 and "must be exactly once" in repeated.stderr, repeated.stderr
