"""The layering docs/ARCHITECTURE.md draws holds in the code: no module imports a module of a higher
layer, at the top of the file or inside a function (a lazy import runs back up just the same)."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "visualbert")


def layer_table():
    """{module: (layer rank, layer name)} from the table in docs/ARCHITECTURE.md; a package (``features/``)
    stands for every module in it. Layers are ranked in the order of the table (``5b`` after ``5``)."""
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    layers, rank, name = {}, -1, None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[0] == "layer" or re.fullmatch(r"-+", cells[0]):
            continue
        if cells[0]:
            rank, name = rank + 1, cells[0]
        for module in re.findall(r"`([a-z_0-9]+(?:/[a-z_0-9]*)?)`", cells[1]):
            layers[module.rstrip("/")] = (rank, name)
    return layers


def modules(table):
    """(module as the table names it, path) of every .py file in the package but its root ``__init__``:
    a module of a sub-package goes by the sub-package's name unless the table names it (``features/__main__``)."""
    for directory, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py") and not (directory == PACKAGE and f == "__init__.py"):
                relative = os.path.relpath(os.path.join(directory, f), PACKAGE).removesuffix(".py").replace(os.sep, "/")
                yield (relative if relative in table else relative.split("/")[0]), os.path.join(directory, f)


def imported_modules(source, package):
    """The package's modules (as the table names them) that ``source``, a file of ``package`` (e.g.
    ``["visualbert", "features"]``), imports anywhere in the file, with the line: relative and absolute
    imports, ``from . import name`` of a module or of a package."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            base = [part for part in base if part]
            targets = [base + [alias.name] for alias in node.names]
        else:
            continue
        for target in targets:
            if target[0] != "visualbert" or len(target) < 2:
                continue
            if os.path.exists(os.path.join(PACKAGE, target[1] + ".py")) or os.path.isdir(os.path.join(PACKAGE, target[1])):
                yield target[1], node.lineno
            # else a name of the package root (its data file paths): below every layer


def test_the_table_names_every_module_of_the_package():
    table = layer_table()
    assert {"quiet", "features", "modeling", "examples", "engine", "tasks", "evaluate"} <= set(table)
    missing = sorted({module for module, _ in modules(table)} - set(table))
    assert not missing, f"modules missing from the layer table in docs/ARCHITECTURE.md: {missing}"


@pytest.mark.parametrize("module,path", sorted(modules(layer_table())), ids=lambda v: os.path.relpath(v, PACKAGE) if os.sep in v else v)
def test_no_module_imports_a_higher_layer(module, path):
    table = layer_table()
    rank, name = table[module]
    with open(path, encoding="utf-8") as f:
        source = f.read()
    package = os.path.relpath(os.path.dirname(path), ROOT).split(os.sep)
    upward = sorted({f"line {line}: {target} ({table[target][1]})" for target, line in imported_modules(source, package)
                     if target in table and table[target][0] > rank})
    assert not upward, f"{os.path.relpath(path, ROOT)} ({name}) imports a higher layer: " + "; ".join(upward)


def test_the_check_sees_lazy_and_relative_imports():
    source = ("from ..examples import load_dataset\nfrom .. import VOCAB_FILE\n\ndef f():\n    from .. import tasks\n"
              "    import visualbert.engine\n    from . import stores\n")
    found = sorted(imported_modules(source, ["visualbert", "features"]))
    # VOCAB_FILE is the package root's; stores is features' own
    assert found == [("engine", 6), ("examples", 1), ("features", 7), ("tasks", 5)]


def test_no_test_file_imports_another():
    """Shared test code lives in conftest.py (fixtures) and helpers.py, so a test file can change alone."""
    tests = os.path.join(ROOT, "tests")
    names = {f.removesuffix(".py") for f in os.listdir(tests) if f.startswith("test_") and f.endswith(".py")}
    found = []
    for name in sorted(names):
        with open(os.path.join(tests, name + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            imported = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"{name}.py line {node.lineno}: {m}" for m in imported if m.split(".")[0] in names]
    assert not found, found
