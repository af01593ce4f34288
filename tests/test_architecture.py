"""The import boundary: analyses reach models only through the backend interface (issue 10, "the backend is the one
door"). ``transformer_lens`` and ``nnsight`` are imported only under ``attnlab/backends`` (and the loaders and
remote client that build those backends); the analysis packages below import neither, by any route, and
``circuits``/``patching`` use no TransformerLens internals (``.bridge``, ``original_component``, hook-name strings).

The test reads the source with :mod:`ast` (nothing is imported) and lists every offender, file and line."""

import ast
import re
from pathlib import Path

import pytest

import attnlab

ROOT = Path(attnlab.__file__).parent
ANALYSES = ("circuits", "heads", "explorer", "patching")
FORBIDDEN = ("transformer_lens", "nnsight")
# TransformerLens internals that only backends/ may touch
INTERNAL_ATTRIBUTES = ("bridge", "original_component")
HOOK_STRING = re.compile(r"\bblocks\.|\bhook_[a-z]|\bln_final\.|\bln[12]\.")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (prose may name hooks; code may not)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else path.name


def _is_forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def import_offenders(path: Path) -> list[str]:
    """``path:line what`` for every import of a forbidden package: ``import x``, ``from x import``, and string
    imports (``importlib.import_module("x")``, ``__import__("x")``, a ``"x"`` constant naming the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstring_nodes(tree)
    rel = _rel(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{rel}:{node.lineno} import {a.name}" for a in node.names if _is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_forbidden(node.module):
            found.append(f"{rel}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                and _is_forbidden(node.value.strip()):
            found.append(f"{rel}:{node.lineno} string import {node.value!r}")
    return found


def internals_offenders(path: Path) -> list[str]:
    """``path:line what`` for TransformerLens internals: ``.bridge`` / ``.original_component`` attributes (also via
    ``getattr(x, "bridge")``) and hook-name strings (``"blocks.{l}.attn.hook_z"``, ``"ln_final.hook_in"``; f-string
    parts included, docstrings excluded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstring_nodes(tree)
    rel = _rel(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in INTERNAL_ATTRIBUTES:
            found.append(f"{rel}:{node.lineno} attribute .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value in INTERNAL_ATTRIBUTES:
                found.append(f"{rel}:{node.lineno} attribute name {node.value!r}")
            elif HOOK_STRING.search(node.value):
                found.append(f"{rel}:{node.lineno} hook-name string {node.value!r}")
    return found


def test_the_checker_finds_every_route(tmp_path):
    """The checks can fail: a planted module with each kind of offence is caught line by line."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""Docstrings may say transformer_lens, blocks.0.hook_z and .bridge."""\n'
        "import importlib\n"
        "import nnsight.intervention\n"
        "from transformer_lens.model_bridge import TransformerBridge\n"
        "tl = importlib.import_module('transformer_lens')\n"
        "w = model.bridge.blocks[0].attn.o.original_component.weight\n"
        "name = f'blocks.{layer}.attn.hook_z'\n"
        "g = getattr(model, 'bridge')\n"
        "ok = 'nnsight is mentioned in prose'\n"
    )
    imports = import_offenders(planted)
    internals = internals_offenders(planted)
    assert [x.split(" ", 1)[0].rsplit(":", 1)[1] for x in imports] == ["3", "4", "5"]
    lines = sorted({int(x.split(" ", 1)[0].rsplit(":", 1)[1]) for x in internals})
    assert lines == [6, 7, 8]
    assert any("original_component" in x for x in internals) and any("hook-name" in x for x in internals)


@pytest.mark.parametrize("package", ANALYSES)
def test_analyses_import_no_model_library(package):
    offenders = [o for path in _modules(package) for o in import_offenders(path)]
    assert not offenders, f"attnlab/{package} imports a model library (use the Backend interface):\n" + \
        "\n".join(offenders)


@pytest.mark.parametrize("package", ANALYSES)
def test_analyses_use_no_transformer_lens_internals(package):
    offenders = [o for path in _modules(package) for o in internals_offenders(path)]
    assert not offenders, f"TransformerLens internals in attnlab/{package} (move them behind the Backend " \
        "interface, e.g. Backend.weights() or Backend.edge_runner()):\n" + "\n".join(offenders)


# -- one error module -----------------------------------------------------------------------------------------------
def test_error_classes_are_defined_in_attnlab_errors():
    """Every exception class attnlab defines lives in attnlab/errors.py (old modules re-export them)."""
    import attnlab.errors

    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "errors.py" and path.parent == ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases)):
                offenders.append(f"{_rel(path)}:{node.lineno} class {node.name}")
    assert not offenders, "error classes outside attnlab/errors.py:\n" + "\n".join(offenders)
    assert sorted(attnlab.errors.__all__) == attnlab.errors.__all__
    for name in attnlab.errors.__all__:
        assert issubclass(getattr(attnlab.errors, name), attnlab.errors.AttnlabError), name


def test_old_error_homes_re_export_the_same_classes():
    import importlib

    from attnlab import ablation, errors
    from attnlab.remote import errors as remote_errors

    agreement, compare, graph = (importlib.import_module(f"attnlab.circuits.{m}") for m in
                                 ("agreement", "compare", "graph"))

    assert graph.CircuitError is errors.CircuitError and graph.MemoryBudgetError is errors.MemoryBudgetError
    assert graph.GradientNotSupportedError is errors.CapabilityError
    assert compare.CircuitComparisonError is errors.CircuitComparisonError
    assert agreement.AgreementError is errors.AgreementError and ablation.AblationError is errors.AblationError
    for name in remote_errors.__all__:
        assert getattr(remote_errors, name) is getattr(errors, name)


# -- import cycles --------------------------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def import_graph() -> dict[str, set[str]]:
    """attnlab module -> the attnlab modules it imports anywhere in its body (function-level imports included)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for m, p in paths.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in paths:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t not in (m, "attnlab"):
                    graph[m].add(t)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert "attnlab.circuits.graph" in graph["attnlab.circuits.eap"]  # the reader sees imports
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (move the shared pieces down):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)
