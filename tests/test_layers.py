"""The package's layers (README, "Architecture"): a module imports only from its own package and
from lower layers, and only the Ray adapter modules import Ray. Read with ``ast``, so imports
inside functions and "module:function" import strings count too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "raykd"

# Lowest first. Within a layer, packages do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "config", "console"),
    ("data",),
    ("run_dir", "models"),
    ("run_lock", "tracking"),
    ("retrieval",),
    ("mining", "training"),
    ("student",),
    ("teacher",),
    ("candidates",),
    ("evaluation",),
    ("report", "tuning", "on_ray", "planning"),
    ("stages",),
    ("cli",),
)
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# The modules that may import Ray: the stage drivers; the Ray Data adapters they call to run
# library code on Ray (on_ray: actor pools, the corpus datasource, the session); Ray Train's
# per-worker loop (training.loop: plain torch inside, as Ray's DeepSpeed example) and Ray Tune's
# search space and callbacks (tuning). Everything else is plain Python, NumPy, pyarrow and torch.
RAY_MODULES = ("stages.", "on_ray.", "tuning.", "training.loop")
IMPORT_STRING = re.compile(r"^(raykd(?:\.\w+)+):\w+$")


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(tree: ast.AST):
    """(line, imported module) for every import and import string in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = IMPORT_STRING.match(node.value)
            if m:
                yield node.lineno, m.group(1)


def _package(module: str) -> str:
    return module.split(".")[0]


def test_every_package_has_a_layer():
    missing = {_package(m) for m, _ in _modules() if m and _package(m) not in LAYER}
    assert not missing, f"add {sorted(missing)} to LAYERS"


def test_no_import_runs_up_or_across_the_layers():
    wrong = []
    for module, tree in _modules():
        if not module:
            continue
        own = _package(module)
        for line, imported in _imports(tree):
            if not imported.startswith("raykd."):
                continue
            target = _package(imported.removeprefix("raykd."))
            if target != own and LAYER[target] >= LAYER[own]:
                wrong.append(f"raykd/{module.replace('.', '/')}.py:{line} imports {imported}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_only_the_ray_adapters_import_ray():
    wrong = []
    for module, tree in _modules():
        if module.startswith(RAY_MODULES) or module in RAY_MODULES:
            continue
        for line, imported in _imports(tree):
            if imported == "ray" or imported.startswith("ray."):
                wrong.append(f"raykd/{module.replace('.', '/')}.py:{line} imports {imported}")
    assert not wrong, "Ray outside the stage drivers and adapters:\n" + "\n".join(wrong)


def test_the_checks_catch_a_wrong_import():
    tree = ast.parse("def f():\n    from raykd.stages.pipeline import STAGES\n")
    assert list(_imports(tree)) == [(2, "raykd.stages.pipeline")]
    assert LAYER["stages"] > LAYER["candidates"]
    tree = ast.parse('TASK = "raykd.student.task:student_task"\nimport ray.data\n')
    assert sorted(_imports(tree)) == [(1, "raykd.student.task"), (2, "ray.data")]
