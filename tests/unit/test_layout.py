"""The package's architecture, checked from its source: folders that import only
downward, no import cycle, happysad's own modules imported at the top, and
keras-tuner's internals behind one wall."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import happysad

PACKAGE = Path(happysad.__file__).resolve().parent

# The order, stated once: a module may import modules of its own layer and of the
# layers before it, never of a layer after it. Within a folder, the longest prefix that
# names a module decides its layer.
LAYERS = [
    # what every layer shares: the errors users see, the trial record, processes
    {"happysad", "happysad.errors", "happysad.trials", "happysad.processes"},
    {"happysad.config"},  # what a command is told: schemas, validation, composition
    {"happysad.serving"},  # what travels inside a logged model: pictures, faces, pyfunc
    {"happysad.data"},  # images on disk -> arrays -> tf.data
    {"happysad.tracking"},  # everything that talks to MLflow
    {"happysad.model"},  # the CNN family and pretrained backbones
    {"happysad.results"},  # metrics, figures, reports, the console
    {"happysad.search"},  # the tuner, trial processes, the session
    {"happysad.search.distribute"},  # the chief, the workers, joining a sweep
    {  # the commands: python -m happysad.X
        "happysad.sweep",
        "happysad.worker",
        "happysad.pretrain",
        "happysad.promote",
        "happysad.predict",
        "happysad.compare",
        "happysad.ui",
        "happysad.export",
    },
]
# Imports of happysad's own modules inside a function: at most this many, each with a
# reason on its line (it would pull TensorFlow into a light path, or must come after
# TensorFlow's start-up lines go to a log).
MAX_DEFERRED = 10
# The only module that may import keras_tuner.src or call keras-tuner's private methods.
WALL = "happysad.search.kt_internals"


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    deferred: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`
    text: str


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _walk(node: ast.AST, deferred: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        inner_deferred = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        inner_type = type_only or (
            isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
        )
        yield child, deferred, type_only
        yield from _walk(child, inner_deferred, inner_type)


def imports() -> list[Import]:
    known = modules()
    found = []
    for name, path in known.items():
        source = path.read_text()
        lines = source.splitlines()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, deferred, type_only in _walk(ast.parse(source), False, False):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" for a in node.names] + [module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            # `from happysad.x import y`: the module y if there is one, else x.
            target = next((t for t in targets if t in known), None)
            if target is not None and target != name:
                found.append(
                    Import(name, target, node.lineno, deferred, type_only, lines[node.lineno - 1])
                )
    return found


def layer(module: str) -> int:
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    assert best is not None, f"{module} is in no layer: add its folder to LAYERS"
    return best


def test_every_module_is_in_a_layer_and_imports_only_downward():
    upward = [
        f"{i.importer}:{i.line} imports {i.imported} ({i.text.strip()})"
        for i in imports()
        if layer(i.imported) > layer(i.importer)
    ]
    assert not upward, "imports of a later layer:\n" + "\n".join(upward)
    assert all(layer(m) is not None for m in modules())


def test_there_is_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for i in imports():
        graph.setdefault(i.importer, set()).add(i.imported)
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_own_modules_are_imported_at_the_top_save_a_few_with_their_reason():
    deferred = [i for i in imports() if i.deferred]
    assert len(deferred) <= MAX_DEFERRED, "\n".join(f"{i.importer}: {i.text}" for i in deferred)
    unexplained = [
        f"{i.importer}:{i.line}: {i.text.strip()}" for i in deferred if "#" not in i.text
    ]
    assert not unexplained, "say why on the line:\n" + "\n".join(unexplained)


def test_keras_tuner_internals_stay_behind_one_wall():
    known = modules()
    crossing = []
    for name, path in known.items():
        if name == WALL:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            module = None
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = " ".join(a.name for a in node.names)
            if module and any(
                m.startswith(("keras_tuner.src", "keras_tuner.engine")) for m in module.split()
            ):
                crossing.append(f"{name}:{node.lineno} imports {module}")
            # keras-tuner's private methods (tuner._get_checkpoint_fname, oracle._get_size)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_get_"):
                crossing.append(f"{name}:{node.lineno} calls {node.attr}")
            # classes built at run time instead of declared
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "type"
                and len(node.args) == 3
            ):
                crossing.append(f"{name}:{node.lineno} builds a class with type(...)")
    assert not crossing, "\n".join(crossing)


def test_the_package_root_holds_the_commands_and_a_few_shared_modules():
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    commands = sorted(m.removeprefix("happysad.") for m in LAYERS[-1])
    shared = sorted(m.removeprefix("happysad.") for m in LAYERS[0] if m != "happysad")
    assert root == sorted(commands + shared)
    folders = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert len(folders) >= 5, folders


def test_only_the_tracking_folder_talks_to_mlflow():
    """MLflow is tracking/'s: the rest of happysad records and reads through it."""
    outside = []
    for name, path in modules().items():
        if name.startswith("happysad.tracking"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            outside += [
                f"{name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "mlflow"
            ]
    assert not outside, "\n".join(outside)


def test_test_files_have_unique_names_across_tiers():
    """The tiers' folders are not packages: pytest imports each test file under its
    bare name, so two files of one name in two tiers fail the whole suite's collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
