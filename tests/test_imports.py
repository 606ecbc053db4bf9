"""The stage files in import order: each imports only stages before it, at any depth (imports inside functions
count), so no cycle can come back and every file can be read after the files it uses (README: "Layout")."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["execute", "synth", "reward", "evaluate", "grpo"]


def stage_imports(path):
    """(line, stage) for every import of a stage file anywhere in `path`, module level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value).split(".")[0]]  # importlib.import_module("grpo") would hide an edge
        else:
            continue
        found += [(node.lineno, name) for name in names if name in ORDER]
    return found


@pytest.mark.parametrize("stage", ORDER)
def test_a_stage_imports_only_the_stages_before_it(stage):
    allowed = ORDER[:ORDER.index(stage)]
    back_edges = [f"{stage}.py:{line} imports {name}" for line, name in stage_imports(ROOT / f"{stage}.py")
                  if name not in allowed]
    assert not back_edges, f"import order is {' -> '.join(ORDER)}; back-edges: {back_edges}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    # a control: the lazy import that used to hide the synth -> grpo cycle must be found
    path = tmp_path / "synth.py"
    path.write_text("import os\n\ndef main():\n    if True:\n        from grpo import load_problems\n"
                    "    import importlib\n    importlib.import_module('evaluate')\n")
    assert stage_imports(path) == [(5, "grpo"), (7, "evaluate")]
