"""The package's imports go one way (docs/architecture.md, "Layers and imports").

Every module of tinygrad_llm is parsed with ``ast`` (nothing is imported), and every
import statement in it is collected, also those inside functions, classes and ``if``
blocks. The tests fail on a module that belongs to no layer, an import of a higher layer,
an import cycle, and a deferred import (one inside a function) of a package module or of
a third-party module that is not an optional dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tinygrad_llm"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, lowest first; a module may import its own layer and the ones below (a
#: module name, or a package meaning everything in it; the longest match wins).
LAYERS = [
    ("base", ["backend", "tiers", "atomic", "config", "hardware", "cli", "tokenizer"]),
    ("function", ["function"]),
    ("ops", ["ops"]),
    ("kernels", ["kernels"]),
    ("tensor", ["tensor", "creation", "gradcheck", "safetensors", "data"]),
    ("nn.functional", ["nn.functional"]),
    ("nn", ["nn"]),
    ("optim", ["optim", "amp"]),
    ("model", ["model", "llama", "architectures"]),
    ("apps", ["generate", "train", "checkpoint", "rundir", "hf", "hf_llama", "presets", "distributed"]),
    ("finetune", ["finetune"]),
    ("package", [""]),                       # tinygrad_llm/__init__.py: the public names
]

#: Third-party modules that may be imported inside a function: optional dependencies,
#: imported where they are needed so that the package works without them.
OPTIONAL = {"cupy", "cupyx", "matplotlib", "tiktoken", "mpi4py"}

# Known exceptions to the rules above: none. (Kept as explicit, empty sets so that an
# exception, if one is ever needed, is written down here with its reason.)
ALLOWED_UPWARD: set = set()
ALLOWED_DEFERRED: set = set()


def _modules() -> dict:
    """dotted module name -> source path, for every .py file of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The modules an import statement in ``module`` loads (absolute dotted names)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        is_package = MODULES[module].name == "__init__.py"
        parent = module.split(".")[: len(module.split(".")) - node.level + is_package]
        base = ".".join(parent + ([base] if base else []))
    # ``from pkg import name`` loads pkg.name when that is a module of its own
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return found if len(found) == len(node.names) else [base] + found


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported module, deferred, line) for every import statement in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []

    def walk(node, deferred):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((name, deferred, child.lineno) for name in _resolve(module, child))
            walk(child, deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(tree, False)
    return out


def _internal(name: str) -> str | None:
    """The package module that ``name`` refers to (or lies in), None for third-party ones."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> int:
    rel = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (rel == p or (p and rel.startswith(p + "."))) and len(p) > best_len:
                best, best_len = rank, len(p)
    return best


EDGES = {m: [(_internal(n), d, line, n) for n, d, line in _imports(m)] for m in MODULES}


def test_the_walk_sees_the_package():
    """A sanity check of the parser itself, on imports known to exist."""
    assert {"tinygrad_llm.tensor", "tinygrad_llm.ops.elementwise", "tinygrad_llm.nn.functional",
            "tinygrad_llm.model", "tinygrad_llm.tokenizer.bpe"} <= set(MODULES)
    tensor = {t for t, *_ in EDGES["tinygrad_llm.tensor"]}
    assert {"tinygrad_llm.function", "tinygrad_llm.ops.elementwise", "tinygrad_llm.backend"} <= tensor
    layers = {t for t, *_ in EDGES["tinygrad_llm.nn.layers"]}
    assert "tinygrad_llm.nn.functional" in layers          # ``from . import functional as F``
    deferred = {n for t, d, _, n in EDGES["tinygrad_llm.train"] if d}
    assert deferred == {"matplotlib", "matplotlib.pyplot"}  # inside _plot


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if _layer(m) is None)
    assert not missing, f"modules in no layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_imports_go_down_the_layers_only():
    upward = {}
    for m, edges in EDGES.items():
        for target, _, line, _ in edges:
            if target is not None and _layer(target) > _layer(m):
                upward[(m, target)] = (f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {target} "
                                       f"({LAYERS[_layer(m)][0]} -> {LAYERS[_layer(target)][0]})")
    new = [msg for key, msg in sorted(upward.items()) if key not in ALLOWED_UPWARD]
    assert not new, "upward imports:\n  " + "\n  ".join(new)
    stale = sorted(ALLOWED_UPWARD - set(upward))
    assert not stale, f"allowed upward imports that no longer happen (remove them from the list): {stale}"


def test_no_import_cycles():
    graph = {m: sorted({t for t, *_ in edges if t is not None and t != m}) for m, edges in EDGES.items()}
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_no_deferred_imports_except_optional_dependencies():
    deferred = {}
    for m, edges in EDGES.items():
        for target, is_deferred, line, name in edges:
            if is_deferred and (target is not None or name.split(".")[0] not in OPTIONAL):
                deferred[(m, target or name)] = f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {name}"
    new = [msg for key, msg in sorted(deferred.items()) if key not in ALLOWED_DEFERRED]
    assert not new, ("imports inside functions (import at the top; only optional third-party "
                     "dependencies may wait):\n  " + "\n  ".join(new))
    stale = sorted(ALLOWED_DEFERRED - set(deferred))
    assert not stale, f"allowed deferred imports that no longer happen (remove them from the list): {stale}"


def test_optional_dependencies_are_imported_where_used_and_say_so():
    """A lazy import of an optional dependency carries a comment saying why it waits."""
    quiet = []
    for m, edges in EDGES.items():
        lines = MODULES[m].read_text(encoding="utf-8").splitlines()
        for target, is_deferred, line, name in edges:
            if is_deferred and target is None and name.split(".")[0] in OPTIONAL and "#" not in lines[line - 1]:
                quiet.append(f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {name}")
    assert not quiet, "lazy imports of optional dependencies without a comment:\n  " + "\n  ".join(quiet)


@pytest.mark.parametrize("source, expect", [
    ("from .tensor import Tensor", ["tinygrad_llm.tensor"]),
    ("from . import backend, tensor", ["tinygrad_llm.backend", "tinygrad_llm.tensor"]),
    ("from .nn import functional as F", ["tinygrad_llm.nn.functional"]),
    ("from .nn import Module", ["tinygrad_llm.nn"]),
    ("import numpy.polynomial", ["numpy.polynomial"]),
])
def test_resolve_relative_imports(source, expect):
    node = ast.parse(source).body[0]
    assert _resolve("tinygrad_llm.model", node) == expect
