"""The layering of the code base, checked statically (docs/architecture.md, "Layers").

edge/ is the bottom layer and imports nothing from aggregator/; inside aggregator/, gateway/
(the runtime) imports only edge/ and itself, lab/ may use gateway/, ops/ may use both, and
only aggregator/cli.py wires subcommands. No module may take part in an import cycle:
a cycle means two modules are one concept split in two, or a shim nobody should need.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "aggregator")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(mod: str, path: Path) -> set[str]:
    """Project modules `mod` imports anywhere in its body (function-local imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(p for p in parts + ([base] if base else []) if p)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            # `import a.b.c` depends on a.b.c (and the packages above it, which we ignore)
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != mod and not MODULES[name].name == "__init__.py":
                out.add(name)
    return out


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return comps


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] == "edge":
        return "edge"
    if len(parts) > 1 and parts[1] in ("gateway", "lab", "ops"):
        return parts[1]
    return "aggregator" if mod != "aggregator.cli" else "cli"


# What each layer may import (besides itself).
ALLOWED = {
    "edge": set(),
    "aggregator": {"edge"},            # aggregator/errors.py: the base error, imports nothing
    "gateway": {"edge", "aggregator"},
    "lab": {"edge", "aggregator", "gateway"},
    "ops": {"edge", "aggregator", "gateway", "lab"},
    "cli": {"edge", "aggregator"},     # subcommands are imported by name, not statically
}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_layering(mod: str) -> None:
    mine = _layer(mod)
    wrong = sorted(dep for dep in GRAPH[mod] if _layer(dep) != mine and _layer(dep) not in ALLOWED[mine])
    assert not wrong, f"{mod} ({mine}) imports {wrong}"


def test_every_package_is_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (edge.cost_profiles is mapped from the top-level
    cost_profiles/): a new sub-package missing there would be absent from an installed wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
