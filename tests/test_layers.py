"""The package reads top-down: a module imports only from layers below its own.

Every import in ``paravec/`` counts, including those inside functions (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` are annotations only and do not. Within one
unit (a package such as ``paravec.pdf``, or a top-level module) imports are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "paravec"

#: Bottom first. A unit may import units of a strictly lower layer.
LAYERS = [
    {"core"},
    {"items", "distributed", "vectors"},
    {"backbones", "data", "losses"},
    {"presets", "pdf", "gradcache"},
    {"unime", "embedder"},
    {"eval", "recipes", "integrations"},
    {"config", "flops"},
    {"train"},
    {"export", "demo", "serve", "cli"},
    {"commands"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
#: What ``paravec/__init__.py`` re-exports, by the unit that defines it.
TOP_LEVEL_NAMES = {"load": "embedder", "Embedder": "embedder", "Item": "items"}


def _unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("paravec"):
            if node.module == "paravec":
                found += [(node.lineno, f"paravec.{TOP_LEVEL_NAMES.get(alias.name, alias.name)}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("paravec.")]
    return found


def test_every_unit_has_a_layer():
    units = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" or (path / "__init__.py").exists()) and path.name != "__init__.py"}
    assert units == set(RANK)


def test_no_import_climbs_a_layer():
    climbs = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        unit = relative.parts[1] if len(relative.parts) > 1 else None
        if unit is None or unit == "__init__":
            continue
        for line, module in _imports(path):
            target = _unit(module)
            if target == unit or target == "__init__":
                continue
            if RANK[target] >= RANK[unit]:
                climbs.append(f"{relative}.py:{line} imports {module} (layer {RANK[target]} from layer {RANK[unit]})")
    assert not climbs, "\n".join(climbs)


def test_training_is_used_only_from_the_top():
    users = set()
    for path in PACKAGE.rglob("*.py"):
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if any(_unit(module) == "train" for _, module in _imports(path)) and unit != "train":
            users.add(unit)
    assert users <= {"commands", "demo", "export"}, users
