"""The import graph: layered (core -> domain -> job layer -> tasks -> report/compare -> entry) and acyclic.

Every ``import`` in evalvae counts, including those inside functions (a lazy import is still a
dependency); ``if TYPE_CHECKING:`` blocks do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import evalvae

ROOT = Path(evalvae.__file__).parent
LAYERS = {
    "core": ["evalvae.errors", "evalvae.io", "evalvae.device", "evalvae.config", "evalvae.conf", "evalvae"],
    "domain": ["evalvae.vae", "evalvae.data", "evalvae.metrics", "evalvae.results"],
    "jobs": ["evalvae.jobs"],
    "tasks": [
        "evalvae.recon",
        "evalvae.t2i",
        "evalvae.bench",
        "evalvae.reference",
        "evalvae.latents",
        "evalvae.robust",
    ],
    "views": ["evalvae.report", "evalvae.compare"],
    "entry": ["evalvae.run", "evalvae.cli", "evalvae.__main__"],
}
RANK = {layer: i for i, layer in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    best = max((p for ps in LAYERS.values() for p in ps if module == p or module.startswith(p + ".")), key=len)
    return next(layer for layer, ps in LAYERS.items() if best in ps)


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


def test_every_import_goes_down_the_layers_or_stays_in_its_own():
    upward = [
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})"
        for a, targets in graph().items()
        for b in targets
        if RANK[layer_of(b)] > RANK[layer_of(a)]
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle():
    edges = graph()
    # A package's __init__ re-exporting its own submodules is not a dependency cycle of the code.
    edges = {a: {b for b in t if not (a != "evalvae" and b.startswith(a + "."))} for a, t in edges.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from evalvae.report import write_report\n")
    assert "evalvae.report.write_report" in imports_of(src, "evalvae.vae.m")
