"""`symphony journal dump|verify` as an operator runs them from a shell.

Goal: first-run friction (issue 15 item 7). `journal dump … | head` ends
quietly (exit 0, nothing on stderr) when the reader stops early; `journal
verify` on a directory with no segment is a usage error (exit 2, one line), not
"ok"; with an --anchor, a stream without segments is a finding (exit 1).
Method: write a real stream with journal.Writer, run the real command as a
process (through bash with pipefail for the pipe), read exit codes and stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from journal import RecordType, Writer
from tests.conftest import REPO_ROOT, symphony_cli
from tests.journal.conftest import child_env

RECORDS = 5000  # ~350 KB of dump lines: far more than a pipe buffer holds


def _stream(directory: Path) -> Path:
    with Writer(directory, "node-a", 0, "none") as writer:
        for i in range(RECORDS - 1):
            writer.append(RecordType.INGRESS, b"payment-%05d" % i, 7000 + i)
    return directory


def test_dump_into_head_ends_quietly(stream_dir: Path) -> None:
    _stream(stream_dir)
    for extra in ([], ["--json"]):
        command = (f"set -o pipefail; {sys.executable} -m symphony journal dump {stream_dir} "
                   f"{' '.join(extra)} | head -n 3")
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                                cwd=REPO_ROOT, env=child_env())
        assert len(result.stdout.splitlines()) == 3, result.stdout  # head got its lines: the pipe did close early
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
    # The whole dump still works and reaches the last record.
    full = symphony_cli("journal", "dump", str(stream_dir))
    assert full.returncode == 0 and full.stdout.splitlines()[-1].split()[0] == str(RECORDS)


def test_verify_without_segments_is_a_usage_error(tmp_path: Path, stream_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("verify", "dump"):
        result = symphony_cli("journal", command, str(empty))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stdout == "" and result.stderr.count("\n") == 1 and "no journal segments" in result.stderr
        assert "Traceback" not in result.stderr
    # The journal root (one level too high) is refused the same way, not reported "ok".
    _stream(stream_dir)
    assert symphony_cli("journal", "verify", str(stream_dir.parent)).returncode == 2
    assert symphony_cli("journal", "verify", str(stream_dir)).returncode == 0
    # With an anchor held outside the writer, a stream with no segment left is a cut tail: a finding.
    anchored = symphony_cli("journal", "verify", str(empty), "--anchor", f"5:{'00' * 32}")
    assert anchored.returncode == 1 and "cut" in anchored.stdout, anchored.stdout + anchored.stderr
