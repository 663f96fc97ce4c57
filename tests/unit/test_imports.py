"""The shape of the compiler's imports, read from its source with ast (nothing is imported):

* no import cycles among nnc's modules, counting module-level imports (and the package
  __init__ every import runs), and none either when the imports inside functions are added;
* no private name (`_x`) imported from another package;
* the zoo (`models`) is imported only where model names are resolved: the model-file loader
  and the command line, never by the compiler's pipeline, targets or kernels;
* backends (targets, kernels, codegen) never import a frontend;
* the op kinds are declared in ir.OP_KINDS and changed nowhere else (no import side effect).
"""
import ast
import os

import pytest

from conftest import ROOT

NNC = os.path.join(ROOT, "tools", "nnc")
ZOO_IMPORTERS = ("nnc.frontend.model_files", "nnc.cli")     # where a zoo name becomes a model
BACKENDS = ("nnc.targets", "nnc.kernels", "nnc.codegen")


def module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(NNC))[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def nnc_modules() -> dict:
    """module name -> (path, ast)."""
    out = {}
    for folder, _, files in os.walk(NNC):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as fh:
                    out[module_name(path)] = (path, ast.parse(fh.read(), path))
    return out


MODULES = nnc_modules()


def is_package(name: str) -> bool:
    return MODULES[name][0].endswith("__init__.py")


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names."""
    if not node.level:
        return node.module
    base = importer.split(".")
    if not is_package(importer):
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(importer: str, tree: ast.AST, module_level: bool):
    """(imported module, imported names or None, line) of every import in `tree`; with
    module_level, only the statements that run when the module is imported."""
    def walk(node):
        for child in ast.iter_child_nodes(node):
            if module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, None, child.lineno
            elif isinstance(child, ast.ImportFrom):
                yield resolve(importer, child), [a.name for a in child.names], child.lineno
            yield from walk(child)
    yield from walk(tree)


def nnc_targets(module: str, names) -> set:
    """The nnc modules an import runs: the module, its parent packages, and the submodules
    named in a `from package import submodule`."""
    out = set()
    parts = module.split(".")
    for i in range(2, len(parts) + 1):
        if ".".join(parts[:i]) in MODULES:
            out.add(".".join(parts[:i]))
    for n in names or ():
        if f"{module}.{n}" in MODULES:
            out.add(f"{module}.{n}")
    return out


def import_graph(module_level: bool) -> dict:
    graph = {}
    for name, (_, tree) in MODULES.items():
        edges = set()
        for module, names, _ in imports(name, tree, module_level):
            if module.split(".")[0] == "nnc":
                edges |= nnc_targets(module, names)
        parents = {".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))}
        graph[name] = sorted(edges - {name} - parents)
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
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


def format_graph(graph: dict) -> str:
    return "\n".join(f"{m} -> {', '.join(d) or '-'}" for m, d in sorted(graph.items()))


def test_the_reader_sees_every_module():
    assert {"nnc.compiler", "nnc.ir", "nnc.arith", "nnc.targets.base", "nnc.targets.cpu",
            "nnc.targets.diana", "nnc.targets.imx681", "nnc.targets.imx681.target"} <= set(MODULES)
    graph = import_graph(module_level=True)
    assert "nnc.targets.base" in graph["nnc.targets.cpu"]
    assert "nnc.compiler" in graph["nnc.targets.diana.target"]
    assert "nnc.targets.imx681.target" in graph["nnc.targets.imx681"]   # a package's __init__


def test_find_cycle_finds_one():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


@pytest.mark.parametrize("module_level", [True, False], ids=["module level", "with function-level imports"])
def test_nnc_has_no_import_cycle(module_level):
    graph = import_graph(module_level)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\n" + format_graph(graph)


def package_of(module: str) -> str:
    return module if is_package(module) else module.rsplit(".", 1)[0]


def test_no_private_name_crosses_packages():
    crossing = []
    for name, (path, tree) in MODULES.items():
        for module, names, line in imports(name, tree, module_level=False):
            if module in MODULES and package_of(module) != package_of(name):
                crossing += [f"{os.path.relpath(path, ROOT)}:{line}: {n} from {module}"
                             for n in names or () if n.startswith("_") and not n.startswith("__")]
    assert not crossing, "private names imported from another package:\n" + "\n".join(crossing)


def test_the_compiler_never_imports_the_zoo():
    offenders = []
    for name, (path, tree) in MODULES.items():
        if any(name == z or name.startswith(z + ".") for z in ZOO_IMPORTERS):
            continue
        offenders += [f"{os.path.relpath(path, ROOT)}:{line}: imports {module}"
                      for module, _, line in imports(name, tree, module_level=False)
                      if module.split(".")[0] == "models"]
    assert not offenders, "\n".join(offenders)


def test_backends_never_import_a_frontend():
    offenders = []
    for name, (path, tree) in MODULES.items():
        if name.startswith(BACKENDS):
            offenders += [f"{os.path.relpath(path, ROOT)}:{line}: imports {module}"
                          for module, _, line in imports(name, tree, module_level=False)
                          if module.startswith("nnc.frontend")]
    assert not offenders, "\n".join(offenders)


def test_op_kinds_are_changed_nowhere():
    """ir.OP_KINDS is declared once; no module adds to it when imported (validation must not
    depend on what was imported before)."""
    offenders = []
    for name, (path, tree) in MODULES.items():
        for node in ast.walk(tree):
            target = None
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                target = next((t for t in targets if isinstance(t, ast.Subscript)), None)
                target = target.value if target is not None else None
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("update", "setdefault", "pop", "__setitem__"):
                target = node.func.value
            if target is not None and ast.unparse(target).split(".")[-1] == "OP_KINDS":
                offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, "OP_KINDS changed at: " + ", ".join(offenders)
