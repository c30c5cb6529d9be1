"""The house rules, read from the source: who may import whom, and no circles.

Goal: keep the layering that makes each part understandable on its own:

    journal            imports no other package of the project
    core (symphony.*)  imports the journal and itself, never a daemon or the app
    daemons            import the core, the journal and themselves, never each other
    app (symphony.app) imports anything (CLI dispatch, `up`, demo, chaos)

and no import circle between any two modules. Method: parse every module with
`ast` (nothing is executed), collect `import`/`from … import` targets (relative
ones resolved), plus module names given as strings to
`importlib.import_module`/`__import__`, the way a dispatch table names them.
Imports under `if TYPE_CHECKING:` count like any other: they never run, but a
type-only circle is still two modules that cannot be understood apart (share
the type from a small module of its own, or a Protocol, instead). Each rule is checked against that graph; the
first test makes sure the graph is not empty, so the rules cannot pass vacuously.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DAEMONS = ("ingress_sidecar", "forwarder", "relayer", "repair", "payments_service", "rail_sim", "witness")
PACKAGES = ("symphony", "journal", *DAEMONS)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        root = REPO / package
        if (root / "__init__.py").is_file():
            for path in sorted(root.rglob("*.py")):
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                targets.add(node.args[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in MODULES:
            # A dispatch table's module path ("forwarder.cli"). A bare word like
            # "witness" is too common a string to count as naming a package.
            targets.add(node.value)
    # `from pkg import name` adds both `pkg` and `pkg.name`; only project
    # modules count (a name that is a function, or the compiled journal core,
    # is not a module here).
    return {t for t in targets if t in MODULES and t != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> str:
    top = module.split(".")[0]
    if module == "symphony.app" or module.startswith("symphony.app."):
        return "app"
    if top == "symphony":
        return "core" if module != "symphony.__main__" else "app"
    return top  # "journal" or a daemon's name


def test_the_graph_is_real() -> None:
    # Guards against a walk that finds nothing and so passes every rule.
    assert len(GRAPH) > 100
    assert "symphony.app.cli" in GRAPH and "forwarder.cli" in GRAPH["symphony.app.cli"]
    assert "symphony.db" in GRAPH["forwarder.store"] or any(t.startswith("symphony") for t in GRAPH["forwarder.store"])


def test_the_journal_imports_nothing_of_the_project() -> None:
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if _layer(m) == "journal" for t in ts if _layer(t) != "journal"]
    assert not bad, bad


def test_the_core_imports_no_daemon_and_not_the_app() -> None:
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if _layer(m) == "core"
           for t in ts if _layer(t) not in ("core", "journal")]
    assert not bad, bad


def test_no_daemon_imports_another_daemon_or_the_app() -> None:
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if _layer(m) in DAEMONS
           for t in ts if _layer(t) not in (_layer(m), "core", "journal")]
    assert not bad, bad


def _cycle() -> list[str] | None:
    """One import circle, if any (iterative DFS, colours white/grey/black)."""
    colour = dict.fromkeys(GRAPH, 0)
    for start in GRAPH:
        if colour[start]:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(GRAPH[start]))]
        colour[start] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = 2
                stack.pop()
                continue
            nxt = pending.pop()
            if colour.get(nxt) == 1:
                path = [n for n, _ in stack]
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, sorted(GRAPH[nxt])))
    return None


def test_no_import_circles() -> None:
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("broken", [("journal._reader", "forwarder.store"), ("symphony.db", "repair.store")])
def test_the_rules_catch_a_forbidden_edge(broken: tuple[str, str]) -> None:
    # The checks above must fail on a real violation: add one edge and look.
    source, target = broken
    GRAPH[source].add(target)
    try:
        with pytest.raises(AssertionError):
            test_the_journal_imports_nothing_of_the_project()
            test_the_core_imports_no_daemon_and_not_the_app()
    finally:
        GRAPH[source].discard(target)


def test_the_cycle_finder_finds_a_circle() -> None:
    GRAPH["journal._format"].add("journal._reader")
    GRAPH["journal._reader"].add("journal._format")
    try:
        assert _cycle() is not None
    finally:
        GRAPH["journal._format"].discard("journal._reader")


def test_type_only_imports_count(tmp_path: Path) -> None:
    """Goal: a circle made only of `if TYPE_CHECKING:` imports is still a circle.
    Method: a probe module whose one import is type-only must show the edge."""
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from repair.store import QUERIES\n")
    assert "repair.store" in _imports("repair.probe", source)
