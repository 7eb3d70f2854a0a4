"""The import graph of the snapshotter package, from ``ast`` (nothing is imported).

    python scripts/import_graph.py            # cycles, and what each layer imports
    python scripts/import_graph.py --check    # exit 1 on a cycle or a layer rule broken

Layers (README "Architecture"): ``core`` is pure and imports only ``core``, ``errors``
and the data layer's declarations (``data.schema``, ``data.dialect``); ``data`` does not
import ``jobs``, ``providers``, ``cli`` or operations other than the cross-cutting logs and
stop flag (``ops.logs``, ``ops.signals``); nothing but ``__main__`` imports ``cli``.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "snapshotter"
CORE_MAY_IMPORT = ("snapshotter.core", "snapshotter.errors", "snapshotter.data.schema", "snapshotter.data.dialect")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n in mods and n != m and n != "snapshotter":
                    edges[m].add(n)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in sorted(edges.items()):
        for d in sorted(deps):
            if m.startswith("snapshotter.core") and not d.startswith(CORE_MAY_IMPORT):
                bad.append(f"{m} -> {d} (the core imports nothing of the shell)")
            if m.startswith("snapshotter.data") and d.startswith(("snapshotter.jobs", "snapshotter.ops", "snapshotter.providers", "snapshotter.cli")) \
                    and d not in ("snapshotter.ops.logs", "snapshotter.ops.signals"):
                bad.append(f"{m} -> {d} (the data layer does not import jobs, operations or providers)")
            if d == "snapshotter.cli" and m != "snapshotter.__main__":
                bad.append(f"{m} -> {d} (nothing imports the CLI)")
    return bad


def main(argv: list[str]) -> int:
    edges = graph()
    cyc, bad = cycles(edges), layer_violations(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(cyc)} cycle(s), {len(bad)} layer violation(s)")
    for c in cyc:
        print("cycle:", " <-> ".join(c))
    for b in bad:
        print("layer:", b)
    return 1 if "--check" in argv and (cyc or bad) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
