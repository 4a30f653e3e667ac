"""Dependencies go one way: no import cycle between modules (function-level imports counted, so a cycle cannot
hide inside a function), and packages import only from their own layer or the layers below:

    core (contract, names, io, paths, registry, calibration, parallel, ...)
      -> models, gan -> generate -> eval, train -> faces -> predict, serve -> commands, cli, __main__

Entry points (``cli``, ``commands``, any ``__main__``) may import anything; nothing may import them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "manipseg"

CORE = {"manipseg", "contract", "names", "io", "paths", "cache", "machine", "device", "postprocess", "visualize",
        "header", "morphology", "calibration", "registry", "parallel", "report", "examples"}
LAYERS = {**{p: 0 for p in CORE}, "models": 1, "gan": 1, "generate": 2, "eval": 3, "train": 3, "faces": 4,
          "predict": 5, "serve": 5}
ENTRY_POINTS = {"cli", "commands"}


def modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _targets(mods: dict[str, Path], module: str, node: ast.AST, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "manipseg"]
    else:
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        if mod.split(".")[0] != "manipseg":
            return []
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
    out = []
    for n in names:
        while n not in mods and "." in n:  # "manipseg.x.attr" -> the module that defines it
            n = n.rsplit(".", 1)[0]
        if n in mods and n != module:
            out.append(n)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line}, every import of the package (module level and inside functions),
    except those under ``if TYPE_CHECKING:``."""
    mods = modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: dict[str, int] = {}

        def walk(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for t in _targets(mods, name, child, path.name == "__init__.py"):
                        edges.setdefault(t, child.lineno)
                walk(child)

        walk(tree)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` (as a closed path) or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, {}):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "manipseg"


def is_entry_point(module: str) -> bool:
    return package(module) in ENTRY_POINTS or module.endswith("__main__")


def test_cycle_finder_finds_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1, "c": 1}, "b": {"c": 1}, "c": {}}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_package_has_a_layer():
    unknown = {package(m) for m in modules()} - set(LAYERS) - ENTRY_POINTS - {"__main__"}
    assert not unknown, f"new top-level module(s) {sorted(unknown)}: give each a layer in tests/test_architecture.py"


def test_packages_import_only_their_own_layer_or_below():
    graph = import_graph()
    wrong = []
    for src, edges in graph.items():
        for dst, line in edges.items():
            if is_entry_point(dst) and not is_entry_point(src):
                wrong.append(f"{src}:{line} imports the entry point {dst}")
            if is_entry_point(src) or package(src) == package(dst) or is_entry_point(dst):
                continue
            if LAYERS[package(src)] < LAYERS[package(dst)]:
                wrong.append(f"{src}:{line} (layer {LAYERS[package(src)]}) imports {dst} (layer {LAYERS[package(dst)]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_packages_form_no_cycle():
    graph = import_graph()
    packages: dict[str, dict[str, int]] = {}
    for src, edges in graph.items():
        if is_entry_point(src):
            continue
        for dst in edges:
            if package(src) != package(dst):
                packages.setdefault(package(src), {})[package(dst)] = 1
    cycle = find_cycle(packages)
    assert cycle is None, "packages importing each other: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", ["manipseg.registry", "manipseg.names", "manipseg.header", "manipseg.machine"])
def test_core_tables_import_no_detector_module_at_import_time(module):
    """The registry and the leaf modules stay importable without models (listing names imports nothing heavy)."""
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imported = {t for n in top for t in _targets(modules(), module, n, False)}
    assert not {m for m in imported if LAYERS.get(package(m), 0) > 0}, imported


#: the only reasons to import inside a function: a dependency that is optional (an extra) or costs start-up time
#: that most commands do not need. Everything else is imported at the top of its module.
LAZY_REASONS = {
    "torch": "about 1.5 s to import; not needed when ONNX Runtime runs the network",
    "safetensors": "its torch half imports torch",
    "kornia": "imports torch",
    "onnxruntime": "optional runtime; half a second to import",
    "onnx": "only to export graphs",
    "ray": "optional extra [ray]",
    "dlib": "optional extra [faces]",
    "face_recognition_models": "optional extra [faces]",
    "h5py": "optional, only to read the packaged HED VGG-16",
    "skimage": "start-up cost; only a few commands need it",
    "sklearn": "start-up cost; only a few commands need it",
    "scipy": "start-up cost; only a few detectors need it",
    "pywt": "start-up cost; NOI only",
    "matplotlib": "start-up cost; only evaluation plots",
    "fastapi": "optional extra [serve]",
    "uvicorn": "optional extra [serve]",
    "starlette": "optional extra [serve]",
    "tomllib": "Python 3.11+ only (the package supports 3.10): only .toml configs need it",
    "cv2": "start-up cost of the command line (`manipseg --help`, listings)",
}


def _top_level_heavy(mods: dict[str, Path]) -> dict[str, str]:
    """Internal module -> the lazy-worthy dependency it imports (directly or through other modules) when imported."""
    tops: dict[str, tuple[set[str], set[str]]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        ext, internal = set(), set()
        for n in tree.body:
            if isinstance(n, ast.Import):
                ext |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and not n.level and not (n.module or "").startswith("manipseg"):
                ext.add((n.module or "").split(".")[0])
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                internal |= set(_targets(mods, name, n, path.name == "__init__.py"))
        tops[name] = (ext, internal)
    out: dict[str, str] = {}

    def heavy(m: str, seen: frozenset) -> str:
        if m in out:
            return out[m]
        ext, internal = tops[m]
        found = next((e for e in sorted(ext) if e in LAZY_REASONS), "")
        for t in sorted(internal):
            if found:
                break
            if t not in seen:
                found = heavy(t, seen | {m})
        out[m] = found
        return found

    for m in mods:
        heavy(m, frozenset())
    return out


def test_function_level_imports_only_for_optional_or_costly_dependencies():
    """Outside the entry points (whose imports are all lazy, for the command line's start-up), an import inside a
    function must be of a dependency in LAZY_REASONS, or of a manipseg module that imports one when imported."""
    mods = modules()
    heavy = _top_level_heavy(mods)
    wrong = []
    for name, path in mods.items():
        if is_entry_point(name):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(fn):
                if not isinstance(n, (ast.Import, ast.ImportFrom)):
                    continue
                internal = _targets(mods, name, n, path.name == "__init__.py")
                if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("manipseg")):
                    if not any(heavy.get(t) for t in internal):
                        wrong.append(f"{name}:{n.lineno} imports {', '.join(internal)} inside a function, which "
                                     "imports nothing costly: move it to the top of the module")
                    continue
                root = (n.names[0].name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                if root not in LAZY_REASONS:
                    wrong.append(f"{name}:{n.lineno} imports {root} inside a function: move it to the top of the "
                                 "module, or give its reason in LAZY_REASONS")
    assert not wrong, "\n".join(wrong)
