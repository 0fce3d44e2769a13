"""The package's layers import one way (README, Layout): config < data < model < evaluation < io < inference <
entry points, with no private name imported across modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_dssm"
LAYERS = ["config", "data", "model", "evaluation", "io", "inference"]  # anything else: an entry point


def imports(path: Path):
    """(module, names) of every ``from pyro_dssm... import ...`` in ``path``, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_dssm"):
            yield node.module, [alias.name for alias in node.names]


def layer(module: str) -> int:
    """The layer of ``pyro_dssm.X...``: its index in LAYERS, or len(LAYERS) for an entry point."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def test_no_module_imports_a_higher_layer_or_a_private_name():
    upward, private = [], []
    for path in PACKAGE.rglob("*.py"):
        mine = layer("pyro_dssm." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for module, names in imports(path):
            if layer(module) > mine:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
            private += [f"{path.relative_to(PACKAGE)} imports {module}.{n}" for n in names if n.startswith("_")]
    assert upward == [] and private == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from pyro_dssm.inference.trainer import fit\nfrom pyro_dssm.model.dssm import _x\n")
    found = list(imports(bad))
    assert [layer(m) for m, _ in found] == [LAYERS.index("inference"), LAYERS.index("model")]
    assert found[1][1] == ["_x"]


MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400  # past these a function or a module holds two concepts


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports at module level (``from a import b``
    counts ``a.b`` when that is a module, else ``a``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.parse(path.read_text()).body:  # module level: imports inside functions run later
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_dssm"):
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("pyro_dssm")]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first = last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_over_60_lines_and_no_module_over_400():
    long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(PACKAGE)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {n} lines")
    assert long == []
