"""keras_kd's modules import each other without a circle.

Every import counts, also those inside functions: a lazy import that closes
a circle works today and breaks as soon as someone moves it to the top.
"""

import ast
import os

from tests.test_case import TestCase

ROOT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "keras_kd")


def module_files():
    modules = {}
    for folder, _, files in os.walk(ROOT):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                name = os.path.relpath(path[:-3], os.path.dirname(ROOT))
                name = name.replace(os.sep, ".")
                if name.endswith(".__init__"):
                    name = name[: -len(".__init__")]
                modules[name] = path
    return modules


def import_graph(modules):
    """`{module: set of keras_kd modules it imports}`."""

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(resolve(full if full in modules else node.module))
        deps.discard(name)
        deps.discard("")
        graph[name] = deps
    return graph


def find_cycle(graph):
    """One circle of imports as a list of modules, or `None`."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


class ImportGraphTest(TestCase):
    def test_no_import_circle(self):
        cycle = find_cycle(import_graph(module_files()))
        self.assertIsNone(cycle, f"import circle: {' -> '.join(cycle or [])}")

    def test_detects_a_circle(self):
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
        self.assertEqual(find_cycle(graph), ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b"}, "b": set()}))

    def test_sees_lazy_imports(self):
        graph = import_graph(module_files())
        # keras_kd.data.cache imports the top-k module inside a function.
        self.assertIn("keras_kd.data.topk", graph["keras_kd.data.cache"])
        self.assertNotIn("keras_kd.data.cache", graph["keras_kd.data.topk"])
