"""The import rules of the packages' docstrings, read from the source files.

`compression_helps/__init__.py` and `deepn_jpeg/__init__.py` say which part
may import which; this test reads every module's imports (top-level and
inside functions) with `ast` and checks them, and that no two modules
import each other in a circle.
"""

import ast
import os

import tensorflow as tf

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGES = ("compression_helps", "deepn_jpeg")
_PAPER1 = ("core", "sources", "models", "engine")

# Part -> the parts it may import (besides itself). A part is
# `<package>.<subpackage>`.
ALLOWED = {
    "compression_helps.core": (),
    "compression_helps.sources": ("compression_helps.core",),
    "compression_helps.models": ("compression_helps.core",),
    "compression_helps.engine": (
        "compression_helps.core",
        "compression_helps.sources",
        "compression_helps.models",
    ),
    "compression_helps.selection": tuple(
        f"compression_helps.{p}" for p in _PAPER1
    ),
    "compression_helps.multi_input": tuple(
        f"compression_helps.{p}" for p in _PAPER1
    ),
    "compression_helps.compress": (
        *(f"compression_helps.{p}" for p in _PAPER1),
        "compression_helps.selection",
        "deepn_jpeg.jpeg",
    ),
    "deepn_jpeg.jpeg": tuple(f"compression_helps.{p}" for p in _PAPER1),
    "deepn_jpeg.analysis": (
        *(f"compression_helps.{p}" for p in _PAPER1),
        "deepn_jpeg.jpeg",
    ),
    "deepn_jpeg.jobs": (
        *(f"compression_helps.{p}" for p in _PAPER1),
        "deepn_jpeg.jpeg",
        "deepn_jpeg.analysis",
    ),
}


def module_files() -> dict[str, str]:
    """Dotted module name -> its file, for every module of both packages."""
    found = {}
    for package in _PACKAGES:
        for folder, _, names in os.walk(os.path.join(_ROOT, package)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, _ROOT)[: -len(".py")].split(
                    os.sep
                )
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imported_modules(path: str, modules: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [
                f"{node.module}.{alias.name}" for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "experiments":
                found.add(name)
            # `from pkg import module` names a module; `from module import
            # name` the module itself.
            elif name in modules:
                found.add(name)
    return found


def part_of(module: str) -> str:
    """`compression_helps.engine.evaluate` -> `compression_helps.engine`."""
    return ".".join(module.split(".")[:2])


class LayoutTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.files = module_files()
        modules = set(self.files)
        self.graph = {
            module: imported_modules(path, modules) - {module}
            for module, path in self.files.items()
        }

    def test_every_module_is_in_a_part(self):
        top_level = sorted(
            m
            for m in self.files
            if m.count(".") == 1 and part_of(m) not in ALLOWED
        )
        self.assertEqual(top_level, [], "modules outside every part")

    def test_parts_import_only_what_their_rules_allow(self):
        broken = []
        for module, imports in sorted(self.graph.items()):
            if module in _PACKAGES:
                continue
            part = part_of(module)
            for name in sorted(imports):
                if name.split(".")[0] == "experiments":
                    broken.append(f"{module} imports {name}")
                    continue
                other = part_of(name)
                if other in _PACKAGES:  # A package's own docstring module.
                    broken.append(f"{module} imports {name}")
                elif other != part and other not in ALLOWED[part]:
                    broken.append(f"{module} imports {name}")
        self.assertEqual(broken, [])

    def test_no_circles(self):
        # Depth-first search; a module on the current path seen again is a
        # circle.
        circles, state = [], {}

        def visit(module, path):
            state[module] = "open"
            for name in sorted(self.graph.get(module, ())):
                if name not in self.graph:
                    continue
                if state.get(name) == "open":
                    circles.append(path[path.index(name) :] + [name])
                elif name not in state:
                    visit(name, [*path, name])
            state[module] = "done"

        for module in sorted(self.graph):
            if module not in state:
                visit(module, [module])
        self.assertEqual([" -> ".join(c) for c in circles], [])

    def test_the_checks_see_imports(self):
        # The rules above could pass by reading nothing: a module known to
        # import the engine must show it.
        self.assertIn(
            "compression_helps.engine.candidates",
            self.graph["compression_helps.engine.evaluate"],
        )
        self.assertIn(
            "compression_helps.core.rundir",
            self.graph["compression_helps.sources.datasets"],
        )
