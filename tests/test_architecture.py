"""The house rules of docs/architecture.md, checked on the source so a change that breaks one
fails here: module size, one-way imports, and one compile site for the train step."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "lm"


def _modules(folder: pathlib.Path):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module name `path` imports (absolute, top to bottom, including lazy imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", _modules(LIBRARY), ids=_name)
def test_library_modules_are_small_and_import_only_downward(path):
    assert len(path.read_text().splitlines()) <= 400, f"{_name(path)}: split it (one owner per concern, <= 400 lines)"
    imports = _imports(path)
    upward = {n for n in imports if n.split(".")[0] in ("tools", "experiments", "configs", "diagnostics")}
    assert not upward, f"{_name(path)} imports {sorted(upward)}: lm/ never imports the folders that use it"
    if "interop" not in path.parts:
        heavy = {n for n in imports if n.split(".")[0] in ("torch", "transformers")}
        assert not heavy, f"{_name(path)} imports {sorted(heavy)}: only lm/interop/ may (an optional extra)"


BLOCKS = ("lm.layers", "lm.primitives", "lm.positions", "lm.models")
NOT_FOR_BLOCKS = ("lm.sharding", "lm.data", "lm.optimizer", "lm.trainer", "lm.assembly", "lm.tasks", "lm.steps")


def test_layers_and_models_never_see_mesh_data_optimizer_or_loop():
    for path in _modules(LIBRARY):
        if not _name(path).startswith(BLOCKS):
            continue
        wrong = {n for n in _imports(path) if n.startswith(NOT_FOR_BLOCKS)}
        assert not wrong, f"{_name(path)} imports {sorted(wrong)}: models speak logical axis names only"


def test_data_never_imports_models_and_losses_never_import_models():
    for path in _modules(LIBRARY / "data") + [LIBRARY / "losses.py"]:
        wrong = {n for n in _imports(path) if n.startswith(("lm.models", "lm.trainer", "lm.assembly"))}
        assert not wrong, f"{_name(path)} imports {sorted(wrong)}"


def test_tasks_never_see_the_loop():
    for path in _modules(LIBRARY / "tasks"):
        wrong = {n for n in _imports(path) if n.startswith(("lm.trainer", "lm.assembly"))}
        assert not wrong, f"{_name(path)} imports {sorted(wrong)}: the loop hands a task what it needs"


def test_train_step_is_built_and_compiled_in_one_place():
    """Only lm/assembly.py turns a step function into a compiled train step (lm/distill.py
    builds the distillation variant's function for it)."""
    builders = {_name(p) for p in _modules(LIBRARY) if "make_train_step(" in p.read_text()}
    assert builders == {"lm.assembly", "lm.distill", "lm.steps"}, builders


def test_tools_do_not_edit_sys_path():
    edited = [p.name for p in _modules(ROOT / "tools") if "sys.path.insert" in p.read_text()]
    assert not edited, f"{edited}: configs/, experiments/ and diagnostics/ are installed packages"
