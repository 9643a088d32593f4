"""The import graph: layered (core -> domain -> job layer -> tasks -> report/compare -> entry) and acyclic,
between modules and between packages.

Every ``import`` in evalvae counts, including those inside functions (a lazy import is still a
dependency); ``if TYPE_CHECKING:`` blocks do not. A unit of the package graph is a subpackage of
evalvae (``evalvae.vae``) or a top-level module (``evalvae.io``); each one is declared in a layer.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import evalvae

ROOT = Path(evalvae.__file__).parent
LAYERS = {
    "core": [
        "evalvae",
        "evalvae.errors",
        "evalvae.io",
        "evalvae.device",
        "evalvae.config",
        "evalvae.conf",
        "evalvae.hub",
        "evalvae.provenance",
        "evalvae.checkpoints",
        "evalvae.vocab",
        "evalvae.store",
    ],
    "domain": ["evalvae.vae", "evalvae.data", "evalvae.metrics", "evalvae.results"],
    "jobs": ["evalvae.jobs"],
    "tasks": [
        "evalvae.recon",
        "evalvae.t2i",
        "evalvae.bench",
        "evalvae.ref",
        "evalvae.latents",
        "evalvae.robustness",
    ],
    "views": ["evalvae.report", "evalvae.compare"],
    "entry": ["evalvae.run", "evalvae.cli", "evalvae.cache", "evalvae.__main__"],
}
RANK = {layer: i for i, layer in enumerate(LAYERS)}
# Above the core, the packages of one layer are independent but for these imports (the core's small
# modules may import one another, acyclically). In the domain: vae and data need only the core.
WITHIN_LAYER = {
    "evalvae.metrics": {"evalvae.data"},  # reference statistics see the images as the protocol crops them
    "evalvae.robustness": {"evalvae.recon", "evalvae.bench"},  # the reconstruction loop, the bench's fidelity
    "evalvae.report": {"evalvae.compare"},  # a report's verdicts against a baseline
    "evalvae.cli": {"evalvae.run"},
    "evalvae.__main__": {"evalvae.cli"},
}


def unit_of(module: str) -> str:
    """The package-graph unit of ``module``: ``evalvae.vae.kl`` -> ``evalvae.vae``; ``evalvae.io`` -> itself."""
    return ".".join(module.split(".")[:2])


def layer_of(module: str) -> str:
    unit = unit_of(module)
    found = [layer for layer, units in LAYERS.items() if unit in units]
    assert found, f"{unit} is in no layer of LAYERS"
    return found[0]


def module_name(path: Path) -> str:
    parts = ("evalvae", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "evalvae" or m.startswith("evalvae.")}


@functools.cache  # read, never changed, by the tests below
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py") if "conf" not in p.relative_to(ROOT).parts}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for m in imports_of(path, name):
            while m not in modules and "." in m:  # `from pkg import name` where name is not a module
                m = m.rpartition(".")[0]
            if m in modules and m != name:
                targets.add(m)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each back edge of a depth-first search of ``edges`` (none: the graph is acyclic)."""
    state: dict[str, int] = {}
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def package_graph() -> dict[str, dict[str, set[str]]]:
    """``{unit: {unit it imports: the module imports that make the edge}}`` between distinct units."""
    edges: dict[str, dict[str, set[str]]] = {}
    for a, targets in graph().items():
        edges.setdefault(unit_of(a), {})
        for b in targets:
            if unit_of(b) != unit_of(a):
                edges[unit_of(a)].setdefault(unit_of(b), set()).add(f"{a} -> {b}")
    return edges


def test_the_import_graph_has_no_cycle():
    edges = graph()
    # A package's __init__ re-exporting its own submodules is not a dependency cycle of the code.
    edges = {a: {b for b in t if not (a != "evalvae" and b.startswith(a + "."))} for a, t in edges.items()}
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_package_graph_has_no_cycle():
    edges = package_graph()
    found = cycles({a: set(t) for a, t in edges.items()})
    lines = [
        " -> ".join(c) + "".join(f"\n    {m}" for a, b in zip(c, c[1:]) for m in sorted(edges[a][b])) for c in found
    ]
    assert not found, "package cycles (with the imports that make each edge):\n" + "\n".join(lines)


def test_every_package_and_top_level_module_is_declared_in_one_layer():
    on_disk = {"evalvae"} | {
        f"evalvae.{p.stem}"
        for p in ROOT.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    declared = [unit for units in LAYERS.values() for unit in units]
    assert len(declared) == len(set(declared)), "a unit declared in two layers"
    assert set(declared) == on_disk, (
        f"undeclared: {sorted(on_disk - set(declared))}; gone: {sorted(set(declared) - on_disk)}"
    )


def test_the_package_graph_is_layered():
    """Every import goes down the layers or stays in its own: a module's layer is its package's, so a module
    imports upward exactly where its package does (each such import is listed)."""
    upward = [
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)}): {', '.join(sorted(why))}"
        for a, targets in package_graph().items()
        for b, why in targets.items()
        if RANK[layer_of(b)] > RANK[layer_of(a)]
    ]
    assert not upward, "packages against the layering:\n" + "\n".join(sorted(upward))


def test_packages_of_one_layer_import_one_another_only_as_declared():
    found = {
        (a, b): why
        for a, targets in package_graph().items()
        for b, why in targets.items()
        if layer_of(a) == layer_of(b) != "core"
    }
    declared = {(a, b) for a, targets in WITHIN_LAYER.items() for b in targets}
    undeclared = [
        f"{a} -> {b}: {', '.join(sorted(why))}" for (a, b), why in sorted(found.items()) if (a, b) not in declared
    ]
    assert not undeclared, "imports between packages of one layer, not in WITHIN_LAYER:\n" + "\n".join(undeclared)
    assert declared <= set(found), f"declared in WITHIN_LAYER but no longer imported: {sorted(declared - set(found))}"


def test_the_checker_sees_a_package_cycle():
    edges = {"evalvae.data": {"evalvae.metrics"}, "evalvae.metrics": {"evalvae.vae"}, "evalvae.vae": {"evalvae.data"}}
    assert cycles(edges) == [["evalvae.data", "evalvae.metrics", "evalvae.vae", "evalvae.data"]]
    assert not cycles({"evalvae.metrics": {"evalvae.data"}, "evalvae.data": set()})
    assert unit_of("evalvae.vae.kl") == "evalvae.vae" and unit_of("evalvae.io") == "evalvae.io"


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from evalvae.report import write_report\n")
    assert "evalvae.report.write_report" in imports_of(src, "evalvae.vae.m")
