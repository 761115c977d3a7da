"""The package's module structure: no import circles among its modules, and the expert search does not reach into the
demo (both run on the shared synthetic scene task)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "eagle_hf"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path):
    """The eagle_hf modules `path` imports when it is imported (imports inside functions are left out)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            if target.startswith("eagle_hf"):
                if node.module:  # `from . import x` imports the submodule x, not the package anew
                    found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("eagle_hf"))
    return found


def import_graph():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in module_level_imports(path) if target in modules and target != name}
            for name, path in modules.items()}


def test_no_module_imports_itself_back_through_others():
    graph = import_graph()
    state, cycles = {}, []

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [name, target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_expert_search_does_not_import_the_demo():
    code = "import sys, eagle_hf.search.cli; print(sorted(m for m in sys.modules if m.startswith('eagle_hf.demo')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


LIGHT_IMPORT = """
import io, sys
from contextlib import redirect_stdout
import eagle_hf
from eagle_hf.cli import main
with redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit:
        pass
heavy = sorted(name for name in ("torch", "transformers", "trl", "peft", "accelerate") if name in sys.modules)
print("heavy:", heavy, "listed:", all(command in out.getvalue() for command in ("demo", "convert", "eval")))
"""


def test_importing_the_package_and_the_command_lines_help_import_neither_torch_nor_transformers():
    result = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "heavy: [] listed: True", result.stdout + result.stderr


REGISTERED = """
import sys
from transformers import AutoConfig
try:
    AutoConfig.for_model("eagle_hf")
    print("registered before")
except ValueError:
    pass
from eagle_hf import EagleConfig
print(type(AutoConfig.for_model("eagle_hf")) is EagleConfig, EagleConfig._auto_class)
"""


def test_taking_a_class_from_the_package_registers_the_auto_classes():
    result = subprocess.run([sys.executable, "-c", REGISTERED], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True AutoConfig", result.stdout + result.stderr
