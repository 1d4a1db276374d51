"""The package's shape: no import circles, and data flowing one way (app -> sidecar -> rules).

Imports are read with ``ast`` (``if TYPE_CHECKING:`` blocks never run and are skipped; an
import inside a function still counts: deferring an import hides a circle, it does not remove
it), so a new circle or a backwards dependency fails here before it confuses a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "otel_ml"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, node.module] if node.module else anchor)
    # ``from . import _names`` names a module; ``from ._x import y`` names a member of ``_x``
    return [f"{base}.{a.name}" for a in node.names] + [base]


def _imports(path: Path, *, lazy: bool) -> set[str]:
    """The otel_ml modules ``path`` imports: at module level, and with ``lazy`` inside functions too."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # never runs
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path.name == "__init__.py", node))
        elif lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name.startswith("otel_ml")}


def _graph(*, lazy: bool = True) -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {}
    for p in paths:
        targets = {t for t in _imports(p, lazy=lazy) if t in modules}
        graph[_module_name(p)] = targets - {_module_name(p)}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among modules (package ``__init__`` re-exports excluded), or None."""
    edges = {m: {t for t in ts if not _is_reexport(m, t)} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)) is not None:
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def _is_reexport(importer: str, imported: str) -> bool:
    """A submodule importing its own package's ``__init__`` (or the reverse) is how re-exports work."""
    return importer.startswith(imported + ".") or imported.startswith(importer + ".")


def test_the_import_graph_has_no_circles() -> None:
    """Not even through an import inside a function: that hides a circle, it does not remove it."""
    assert _cycle(_graph()) is None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert _cycle({"otel_ml.a": {"otel_ml.b"}, "otel_ml.b": {"otel_ml.c"}, "otel_ml.c": {"otel_ml.a"}}) == [
        "otel_ml.a",
        "otel_ml.b",
        "otel_ml.c",
        "otel_ml.a",
    ]


@pytest.mark.parametrize(
    ("layer", "must_not_import"),
    [
        (
            "otel_ml.instrument",
            ("otel_ml.sidecar", "otel_ml.mixin", "otel_ml.demo", "otel_ml.drift", "otel_ml.evaluation"),
        ),
        ("otel_ml.baseline", ("otel_ml.sidecar", "otel_ml.mixin", "otel_ml.demo", "otel_ml.instrument")),
        ("otel_ml.drift", ("otel_ml.sidecar", "otel_ml.mixin", "otel_ml.demo", "otel_ml.instrument")),
        (
            "otel_ml.evaluation",
            ("otel_ml.sidecar", "otel_ml.mixin", "otel_ml.demo", "otel_ml.instrument", "otel_ml.baseline"),
        ),
        ("otel_ml.sidecar", ("otel_ml.mixin", "otel_ml.demo")),
        ("otel_ml.mixin", ("otel_ml.sidecar", "otel_ml.instrument", "otel_ml.demo")),
    ],
)
def test_data_flows_one_way(layer: str, must_not_import: tuple[str, ...]) -> None:
    """app (instrument) -> sidecar -> rules and dashboards (mixin); the demo sits on top of all."""
    graph = _graph()
    backwards = {
        (m, t)
        for m, targets in graph.items()
        if m == layer or m.startswith(layer + ".")
        for t in targets
        if any(t == bad or t.startswith(bad + ".") for bad in must_not_import)
    }
    assert backwards == set()
