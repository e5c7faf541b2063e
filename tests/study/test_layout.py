"""The house's import structure, read from the sources (module and function-level imports).

study/ is laid out as the path of a request (DESIGN.md, "Packages"): request -> plan ->
execute, with store below them all. Each package may import only what the table below
allows, and no module anywhere (study, trainables, search_spaces, reports) may import itself
back through others: a circle, even through a function-level import, is a hidden order of
initialisation and a coupling the layout exists to prevent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("study", "trainables", "search_spaces", "reports")
MAX_LINES = 400

# part of study/ -> what of ours (and whether Ray) it may import. A part is a subpackage, the
# two leaf modules, or "root" (the entry points and old-path modules at study/'s top).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "ray_internals": {"ray"},
    "store": {"errors", "store", "search_spaces", "trainables"},
    "request": {"errors", "request", "store", "search_spaces", "trainables"},
    "plan": {"errors", "plan", "request", "store", "search_spaces", "trainables"},
    "execute": {"errors", "execute", "plan", "store", "ray_internals", "trainables", "ray"},
    "root": {
        "errors", "store", "request", "plan", "execute", "root", "search_spaces", "trainables",
    },
}  # fmt: skip
# store may take from trainables only the record keys and config the schema is built from,
# request only the trial config; search_spaces only what a space's stored definition needs.
NARROW = {
    ("store", "trainables"): {"trainables"},
    ("request", "trainables"): {"trainables"},
}


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports, anywhere in it (functions included), with its line."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # `from study import plan` imports the module study.plan
            for alias in node.names:
                out.append((f"{target}.{alias.name}", node.lineno))
    return out


def part(module: str) -> str | None:
    """The part of study/ a module of study/ belongs to."""
    pieces = module.split(".")
    if pieces[0] != "study":
        return None
    if len(pieces) == 1:
        return "root"
    if pieces[1] in ("store", "request", "plan", "execute", "errors", "ray_internals"):
        return pieces[1]
    return "root"


def ours(target: str, known: set[str]) -> str | None:
    """The module of ours that `target` names (the longest known prefix), or None."""
    pieces = target.split(".")
    for n in range(len(pieces), 0, -1):
        candidate = ".".join(pieces[:n])
        if candidate in known:
            return candidate
    return None


def graph() -> dict[str, dict[str, int]]:
    known = {name for package in PACKAGES for name, _ in modules(package)}
    edges: dict[str, dict[str, int]] = {}
    for package in PACKAGES:
        for name, path in modules(package):
            edges[name] = {}
            for target, line in imports(name, path):
                hit = ours(target, known)
                if hit and hit != name and not name.startswith(hit + "."):
                    edges[name].setdefault(hit, line)
    return edges


def violations() -> list[str]:
    known = {name for package in PACKAGES for name, _ in modules(package)}
    found = []
    for name, path in modules("study"):
        mine = part(name)
        assert mine is not None
        for target, line in imports(name, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            top = target.split(".")[0]
            if top == "ray":
                if "ray" not in ALLOWED[mine]:
                    found.append(f"{where}: {mine} may not import Ray")
                continue
            hit = ours(target, known)
            if hit is None or hit == "study":  # `from study import x`: x is checked itself
                continue
            other = part(hit) or hit.split(".")[0]
            if other == mine:
                continue
            if other not in ALLOWED[mine]:
                found.append(f"{where}: {mine} may not import {other}")
    return found


def test_every_package_of_study_imports_only_what_the_table_allows() -> None:
    assert violations() == []


def test_the_table_check_sees_function_level_imports(tmp_path: Path) -> None:
    """A check that cannot fail proves nothing: a lazy import of Ray in plan is caught."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from ray import tune\n    from study.execute import tuner\n")
    found = {t for t, _ in imports("study.plan.x", source)}
    assert {"ray", "study.execute"} <= found and "study.execute.tuner" in found
    assert part("study.plan.x") == "plan" and "ray" not in ALLOWED["plan"]
    assert "execute" not in ALLOWED["plan"]


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_module_of_the_house_imports_itself_back() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_circle_through_a_function_level_import() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 3}, "d": {"a": 1}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_reports_imports_none_of_our_packages() -> None:
    edges = graph()
    leaks = {m: t for m, e in edges.items() if m.startswith("reports") for t in e
             if not t.startswith("reports")}  # fmt: skip
    assert leaks == {}


@pytest.mark.parametrize("path", sorted((ROOT / "study").rglob("*.py")), ids=str)
def test_no_file_of_study_is_over_the_line_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
