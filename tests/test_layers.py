"""The package's dependencies point one way: the layers of ``snnlite``'s docstring, checked.

The import graph is read from the source with ``ast`` (not from ``sys.modules``), so an import
hidden in a function to dodge a cycle is seen and refused, and every module is imported alone
(in a fresh interpreter, with every other snnlite module dropped before it), so none depends
on another having been imported first.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import snnlite

PACKAGE = Path(snnlite.__file__).resolve().parent
# Imports of these are allowed inside functions: optional or heavy third-party packages that
# only one function needs. Never a snnlite module.
_LAZY_OK = re.compile(r"^(torchmetrics|nbclient|IPython|numba|numpy|yaml|matplotlib)\b")


def _module_name(path: Path) -> str:
    parts = ["snnlite", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layers() -> dict[str, int]:
    """{name or prefix: layer} from the table in ``snnlite.__doc__``."""
    block = snnlite.__doc__.split("Layers, bottom up", 1)[1].split("\n\n", 2)[1]
    layers = {}
    for line in block.strip().splitlines():
        number, _title, names = re.match(r"\s*(\d+)\s+(\S+)\s+(.*)", line).groups()
        for name in re.findall(r"[a-z_.]+", names.split("(")[0]):
            layers[f"snnlite.{name}"] = int(number)
    return layers


LAYERS = _layers()


def layer_of(module: str) -> int:
    if module == "snnlite":
        return max(LAYERS.values())  # the package's front door imports what it exports
    best = max((key for key in LAYERS if module == key or module.startswith(key + ".")),
               key=len, default=None)  # fmt: skip
    assert best is not None, f"{module} is in no layer of snnlite's docstring: add it there"
    return LAYERS[best]


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The snnlite modules an import statement loads (``from pkg import sub`` counts sub)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    if len(submodules) == len(node.names):  # ``from snnlite import kernels``: the module only
        return submodules
    return [base, *submodules]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """({module: snnlite modules it imports at module level}, [imports hidden in functions])."""
    graph: dict[str, set[str]] = {}
    hidden = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = set()
        top = set(map(id, _module_level_imports(tree)))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = [t for t in _resolve(module, node) if t.split(".")[0] == "snnlite"]
            if id(node) in top:
                graph[module].update(t for t in targets if t in MODULES and t != module)
            elif targets:
                hidden.append(f"{module}:{node.lineno} imports {targets[0]} inside a function")
            elif not all(_LAZY_OK.match(n) for n in _external_names(node)):
                hidden.append(f"{module}:{node.lineno} imports {_external_names(node)} lazily")
    return graph, hidden


def _module_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports run when the module is imported (also under ``if``/``try`` at module level)."""
    found, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):
            stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)
    return found


def _external_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_is_hidden_in_a_function() -> None:
    _, hidden = import_graph()
    assert hidden == []


def test_imports_point_down_the_layers() -> None:
    graph, _ = import_graph()
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in graph.items() for t in sorted(targets)
              if layer_of(t) > layer_of(m) and not m.startswith(t + ".")]  # fmt: skip
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph, _ = import_graph()
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    edges = {m: {t for t in ts if not t.startswith(m + ".") and not m.startswith(t + ".")}
             for m, ts in graph.items()}  # fmt: skip
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, module, target]))
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


IMPORTABLE = [m for m in MODULES if not m.endswith("__main__")]

# Run in ONE fresh interpreter: before each import every snnlite module is dropped from
# sys.modules, so each is imported as alone as in an interpreter of its own (the package's
# __init__ first, then what the module itself imports), while torch and the other
# third-party packages stay loaded: a fresh interpreter per module spent two minutes of the
# suite importing torch 44 times. Prints {module: the traceback's tail, or ""} as JSON.
_IMPORT_EACH_ALONE = """
import importlib, json, sys, traceback
errors = {}
for name in json.loads(sys.argv[1]):
    for loaded in [k for k in sys.modules if k == "snnlite" or k.startswith("snnlite.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
        errors[name] = ""
    except BaseException:
        errors[name] = traceback.format_exc()[-2000:]
print("\\n" + json.dumps(errors))
"""


@pytest.fixture(scope="module")
def import_errors() -> dict[str, str]:
    """{module: traceback tail, "" if it imported alone}, from one fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, json.dumps(IMPORTABLE)],
                            capture_output=True, text=True, cwd=PACKAGE.parent,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", IMPORTABLE)
def test_each_module_imports_alone(module: str, import_errors: dict[str, str]) -> None:
    assert import_errors[module] == "", import_errors[module]


def test_a_module_that_needs_another_imported_first_is_caught(tmp_path: Path) -> None:
    """The purge above is what makes the check real: a module that only works when another
    snnlite module was imported before it fails here, as it would in a fresh interpreter."""
    package = tmp_path / "snnlite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("import sys\nsys.modules['snnlite'].ready = True\n")
    (package / "second.py").write_text("import snnlite\nassert snnlite.ready\n")
    order = ["snnlite.first", "snnlite.second"]
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, json.dumps(order)],
                            capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)  # fmt: skip
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors["snnlite.first"] == "" and "no attribute 'ready'" in errors["snnlite.second"]


def test_import_snnlite_works_without_matplotlib() -> None:
    """matplotlib is needed by ``snnlite.plots`` alone (the book's figures), not the package.

    torchmetrics (imported by ``snnlite.metrics``) imports matplotlib, and scienceplots,
    when their distributions are installed, so both are hidden from import and from
    ``importlib.metadata``, as in an environment without them.
    """
    code = (
        "import importlib.metadata as metadata, sys\n"
        "hidden = ('matplotlib', 'scienceplots')\n"
        "for name in hidden:\n"
        "    sys.modules[name] = None  # any import of it raises ImportError\n"
        "real = metadata.distribution\n"
        "def distribution(name):\n"
        "    if name.lower() in hidden:\n"
        "        raise metadata.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "metadata.distribution = distribution\n"
        "import snnlite\n"
        "assert 'torchmetrics' not in sys.modules  # the package itself stays light\n"
        "import snnlite.energy, snnlite.metrics, snnlite.theory, snnlite.detection\n"
        "import snnlite.data, snnlite.zoo, snnlite.notebook\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_command_lines_live_only_in_the_scripts_and_cli_layers() -> None:
    """argparse appears in the zoo's scripts, the energy CLI and the ``snnlite`` command line
    alone (one energy CLI: ``snnlite energy`` runs ``python -m snnlite.energy``'s)."""
    with_cli = sorted(
        module
        for module, path in MODULES.items()
        if re.search(r"^import argparse", path.read_text(), re.MULTILINE)
    )
    allowed = ("snnlite.zoo.", "snnlite.cli")
    assert all(m.startswith(allowed) or m == "snnlite.energy.__main__" for m in with_cli)
    assert {"snnlite.energy.__main__", "snnlite.cli"} <= set(with_cli)
    assert layer_of("snnlite.cli") == max(LAYERS.values()) == layer_of("snnlite.__main__")


def test_the_energy_cli_explains_every_flag() -> None:
    from snnlite.energy.__main__ import parser

    cli = parser()
    flags = [a for a in cli._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in flags} >= {"models", "images", "timesteps", "photo_size", "stored"}
    assert all(a.help and len(a.help) > 20 for a in flags)
