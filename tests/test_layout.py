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
