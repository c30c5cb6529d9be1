#!/usr/bin/env python3
"""Mutation check for the invariants: every one-line break listed in
scripts/mutations.toml must make its tests fail.

For each mutant the runner replaces one exact line of one file with a
breaking variant, runs the mutant's pytest node ids, and expects them to fail.
A mutant whose tests still pass has *survived*: the tests do not guard the
invariant the line enforces, and the run fails. The run also fails when the
unmutated tests do not pass (a mutant "killed" by an already failing test
proves nothing), when a listed line does not occur exactly once in its file
(the list cannot rot silently when code moves), or when a mutated Python file
does not compile (a syntax error kills every mutant and proves nothing).

Nothing touches the working tree. The tracked (and new, not ignored) files
are copied once into a temporary directory with the journal's built C
extension; the mutants are applied there one at a time and reverted after
each run. Tests run with this checkout's interpreter (the project's .venv)
and the copy first on PYTHONPATH, so the copy's packages are the ones
imported, also by the daemons the tests start. A mutant of the journal's C
source rebuilds the extension in the copy (`journal/_build.py`).

Usage: scripts/mutate.py [--list FILE] [--only ID ...] [--keep]
Exit codes: 0 every mutant killed; 1 a mutant survived or the unmutated tests
fail; 2 the list is malformed or out of date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIST = ROOT / "scripts" / "mutations.toml"
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
TEST_TIMEOUT_SECONDS = 600
PYTEST_FAILED = 1  # pytest's exit code when tests ran and some failed


class ListError(Exception):
    """The mutation list is malformed or no longer matches the code."""


@dataclass(frozen=True)
class Mutant:
    id: str
    invariant: str
    what: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


def load(path: Path) -> list[Mutant]:
    """The list's mutants, checked for shape (not yet against the code)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ListError(f"{path}: {exc}") from None
    mutants: list[Mutant] = []
    seen: set[str] = set()
    for index, entry in enumerate(data.get("mutant", [])):
        where = f"{path.name}: mutant #{index + 1}"
        for key in ("id", "invariant", "what", "file", "original", "replacement", "tests"):
            if key not in entry:
                raise ListError(f"{where}: missing key {key!r}")
        extra = set(entry) - {"id", "invariant", "what", "file", "original", "replacement", "tests"}
        if extra:
            raise ListError(f"{where}: unknown keys {sorted(extra)}")
        mutant = Mutant(str(entry["id"]), str(entry["invariant"]), str(entry["what"]), str(entry["file"]),
                        str(entry["original"]), str(entry["replacement"]), tuple(map(str, entry["tests"])))
        if mutant.id in seen:
            raise ListError(f"{where}: id {mutant.id!r} is used twice")
        seen.add(mutant.id)
        if "\n" in mutant.original.strip() or "\n" in mutant.replacement.strip():
            raise ListError(f"{mutant.id}: original and replacement are one line each")
        if mutant.original.strip() == mutant.replacement.strip():
            raise ListError(f"{mutant.id}: the replacement equals the original")
        if not mutant.tests:
            raise ListError(f"{mutant.id}: no tests to run")
        mutants.append(mutant)
    if not mutants:
        raise ListError(f"{path}: no [[mutant]] entries")
    return mutants


def mutate_text(text: str, mutant: Mutant) -> str:
    """`text` with the mutant's line replaced (its indentation kept); the
    original must be exactly one whole line of the file, stripped."""
    lines = text.splitlines(keepends=True)
    wanted = mutant.original.strip()
    hits = [index for index, line in enumerate(lines) if line.strip() == wanted]
    if len(hits) != 1:
        raise ListError(f"{mutant.id}: the original line occurs {len(hits)} times in {mutant.file} "
                        f"(must be exactly once): {wanted!r}")
    line = lines[hits[0]]
    indent = line[: len(line) - len(line.lstrip())]
    ending = line[len(line.rstrip("\r\n")):]
    lines[hits[0]] = indent + mutant.replacement.strip() + ending
    return "".join(lines)


def check_against(root: Path, mutants: list[Mutant]) -> None:
    """Every mutant applies to the code at `root` (and a Python one compiles)."""
    for mutant in mutants:
        path = root / mutant.file
        if not path.is_file():
            raise ListError(f"{mutant.id}: no file {mutant.file}")
        mutated = mutate_text(path.read_text(encoding="utf-8"), mutant)
        if path.suffix == ".py":
            try:
                compile(mutated, str(path), "exec")
            except SyntaxError as exc:
                raise ListError(f"{mutant.id}: the mutated {mutant.file} does not compile: {exc}") from None


def copy_tree(target: Path) -> None:
    """Tracked and new (not ignored) files, plus the journal's built extension."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is still listed as cached
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    built = sorted((ROOT / "journal").glob("_journal*.so"))
    if not built:
        raise ListError("the journal's C extension is not built: run scripts/test.sh once first")
    for extension in built:
        shutil.copy2(extension, target / "journal" / extension.name)


def run_tests(root: Path, tests: list[str], log: Path) -> int:
    """pytest over `tests` in the copy at `root`; its exit code."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a reverted file must never be read from a stale .pyc
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    with log.open("wb") as out:
        try:
            return subprocess.run(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=TEST_TIMEOUT_SECONDS, check=False).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\nmutate.py: timed out after {TEST_TIMEOUT_SECONDS} s\n".encode())
            return -1


def rebuild_journal(root: Path, log: Path, mutant: Mutant) -> None:
    """Rebuild the journal's C extension in the copy; a mutant that does not build proves nothing."""
    with log.open("ab") as out:
        built = subprocess.run([sys.executable, "journal/_build.py"], cwd=root, stdout=out, stderr=subprocess.STDOUT,
                               check=False, timeout=TEST_TIMEOUT_SECONDS)
    if built.returncode != 0:
        raise ListError(f"{mutant.id}: the mutated {mutant.file} does not build:\n{tail(log)}")


def imports_from(root: Path) -> bool:
    """The copy's packages shadow the installed (editable) ones."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run([sys.executable, "-c", "import symphony, journal; print(symphony.__file__); "
                            "print(journal.__file__)"], cwd=root, env=env, capture_output=True, text=True,
                           check=False)
    paths = found.stdout.split()
    return found.returncode == 0 and len(paths) == 2 and all(Path(p).is_relative_to(root) for p in paths)


def tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run(mutants: list[Mutant], keep: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="symphony-mutants-"))
    root = workdir / "repo"
    logs = workdir / "logs"
    logs.mkdir()
    try:
        copy_tree(root)
        check_against(root, mutants)
        if not imports_from(root):
            print("mutate: the copy's packages are not the ones imported (PYTHONPATH ignored?)", file=sys.stderr)
            return EXIT_USAGE
        tests = list(dict.fromkeys(test for mutant in mutants for test in mutant.tests))
        started = time.monotonic()
        code = run_tests(root, tests, logs / "unmutated.log")
        print(f"unmutated: {len(tests)} test ids, pytest exit {code} ({time.monotonic() - started:.0f} s)",
              flush=True)
        if code in (4, 5):  # pytest: usage error (a node id not found) or nothing collected
            print(f"mutate: a listed test id does not exist (pytest exit {code}):\n{tail(logs / 'unmutated.log')}",
                  file=sys.stderr)
            return EXIT_USAGE
        if code != 0:
            print(f"mutate: the unmutated tests fail, so no mutant can be judged:\n{tail(logs / 'unmutated.log')}",
                  file=sys.stderr)
            return EXIT_FINDINGS
        survivors, broken = [], []
        extensions = {path.name: path.read_bytes() for path in (root / "journal").glob("_journal*.so")}
        for mutant in mutants:
            target = root / mutant.file
            original = target.read_bytes()
            log = logs / f"{mutant.id}.log"
            started = time.monotonic()
            try:
                target.write_text(mutate_text(original.decode("utf-8"), mutant), encoding="utf-8")
                if target.suffix in (".c", ".h") and target.parent.name == "journal":
                    rebuild_journal(root, log, mutant)
                code = run_tests(root, list(mutant.tests), log)
            finally:
                target.write_bytes(original)
                for path in (root / "journal").glob("_journal*.so"):
                    if path.name not in extensions:
                        path.unlink()
                for name, content in extensions.items():
                    if (root / "journal" / name).read_bytes() != content:
                        (root / "journal" / name).write_bytes(content)
            verdict = "killed" if code == PYTEST_FAILED else "SURVIVED" if code == 0 else f"ERROR (pytest exit {code})"
            print(f"{mutant.id:<32} invariant {mutant.invariant:<4} {verdict} ({time.monotonic() - started:.0f} s)",
                  flush=True)
            if code == 0:
                survivors.append(mutant)
            elif code != PYTEST_FAILED:
                broken.append((mutant, log))
        for mutant in survivors:
            print(f"mutate: {mutant.id} survived: {mutant.what} ({mutant.file}); "
                  f"its tests {list(mutant.tests)} still pass", file=sys.stderr)
        for mutant, log in broken:
            print(f"mutate: {mutant.id}: pytest did not run to a verdict:\n{tail(log)}", file=sys.stderr)
        return EXIT_FINDINGS if survivors or broken else EXIT_OK
    finally:
        if keep:
            print(f"mutate: copy and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that each listed invariant-breaking mutant fails its tests.")
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help="the mutation list (TOML)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--check", action="store_true",
                        help="only check that every mutant still applies to the working tree; run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and the pytest logs")
    args = parser.parse_args(argv)
    try:
        mutants = load(args.list)
        if args.only:
            unknown = set(args.only) - {mutant.id for mutant in mutants}
            if unknown:
                raise ListError(f"unknown mutant ids: {sorted(unknown)}")
            mutants = [mutant for mutant in mutants if mutant.id in args.only]
        if args.check:
            check_against(ROOT, mutants)
            print(f"mutate: {len(mutants)} mutants apply")
            return EXIT_OK
        return run(mutants, args.keep)
    except ListError as exc:
        print(f"mutate: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
