"""The shape of the package, read from its source with ``ast`` (nothing is imported): every module
in a layer folder and no folder importing a higher layer (``LAYERS``), no import cycle between
``surf_dist`` modules, ``torch.distributed`` and ``ray`` only in ``comm/`` and ``runtime/``, the
experiments above the maths, and no file grown past ``MAX_LINES``."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "surf_dist"
MAX_LINES = 450
# Files already over MAX_LINES when this test was written, each held at its size then: they may
# shrink, never grow; at MAX_LINES or below, drop them from here. Split one rather than raise it.
OVER_MAX_LINES: dict[str, int] = {}
DISTRIBUTED_MODULES = ("torch.distributed", "ray")
DISTRIBUTED_HOMES = ("comm", "runtime")
# The layers, top to bottom: a folder may import its own modules and those of every folder on a
# lower line; folders on one line (problem, comm) may not import each other. cli is the top
# (nothing imports it), io the ground (it imports no other folder).
LAYERS = (
    ("cli",),         # the parser, pre-flight checks, one-line errors
    ("commands",),    # the jobs: demo, bench, train, evaluate, baselines, experiment
    ("runtime",),     # where workers live: one process, torch.distributed ranks, Ray actors
    ("core",),        # engine, coordinator, the meta-training and evaluation loops
    ("methods",),     # the learned network and its constraints; the baselines
    ("problem", "comm"),   # softmax problem, tasks, data, graphs | the Communicator
    ("io",),          # config, checkpoints, plots, progress, output folders
)


def module_files(package: Path) -> dict[str, Path]:
    """{dotted module name: file} of every .py under ``package`` (a package is its __init__)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_statements(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module named, names taken from it, line) of every import in the file, at module level,
    inside functions or under ``if TYPE_CHECKING``, relative ones resolved: ``import a.b`` is ("a.b", [], line), ``from ..x
    import f, g`` in surf_dist.y.z is ("surf_dist.x", ["f", "g"], line)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    statements = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            statements += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            statements.append((source, [alias.name for alias in node.names], node.lineno))
    return statements


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """(dotted name, line) of everything the file imports: ``from x import f`` gives x and x.f."""
    return [(name, line) for source, members, line in import_statements(module, path)
            for name in [source] + [f"{source}.{m}" for m in members]]


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the package modules it imports}. ``from x import f`` is an edge to the module x.f
    where there is one (``from . import plots``), else to x; importing a module inside a package
    is no edge to the package's __init__ (Python loads a parent first, which is not a cycle)."""
    modules = module_files(package)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for source, members, _ in import_statements(module, path):
            for name in [f"{source}.{m}" for m in members] or [source]:
                if name in modules:
                    targets.add(name)
                elif source in modules:
                    targets.add(source)
        graph[module] = targets - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v: str) -> None:   # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_through(min(c), c, graph) for c in components]


def _cycle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path start -> ... -> start inside ``component`` (breadth first)."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & component):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"no cycle through {start} in {component}")


def allowed_imports(layers=LAYERS) -> dict[str, set[str]]:
    """{folder: the folders it may import}: itself and every folder on a lower line."""
    allowed = {}
    for i, line in enumerate(layers):
        below = {folder for lower in layers[i + 1:] for folder in lower}
        allowed.update({folder: below | {folder} for folder in line})
    return allowed


def folder_of(module: str) -> str | None:
    """The layer folder of ``surf_dist.FOLDER.rest`` (None for the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """``a -> b`` for every import of a module b whose folder ``a``'s folder may not import."""
    allowed = allowed_imports(layers)
    return [f"{module} -> {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
            if folder_of(module) is not None and folder_of(target) not in allowed.get(folder_of(module), ())]


# --------------------------------------------------------------------------- the reader itself

def test_graph_reader_finds_a_planted_cycle(tmp_path):
    """Relative imports (one and two dots, ``from . import``), absolute ones and imports inside
    functions all make edges; a cycle through a subpackage is found and reported in order."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import thing\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import thing\n")
    (pkg / "sub" / "b.py").write_text("def thing():\n    from .. import c\n    return c\n")
    (pkg / "c.py").write_text("import os\nimport pkg.a\n")
    (pkg / "d.py").write_text("from . import c\nfrom .sub import thing\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.c"},
                     "pkg.c": {"pkg.a"}, "pkg.d": {"pkg.c", "pkg.sub"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycles(import_graph(pkg)) == []


def test_layer_check_finds_an_upward_import(tmp_path):
    """A lower folder importing a higher one, or a peer on its line, is reported; downward is fine."""
    pkg = tmp_path / "pkg"
    for folder in ("low", "mid", "mid2", "top"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "top" / "a.py").write_text("from ..mid import b\nfrom ..low.c import f\n")
    (pkg / "mid" / "b.py").write_text("from ..low import c\n")
    (pkg / "low" / "c.py").write_text("def f():\n    from ..mid2 import d\n")
    (pkg / "mid2" / "d.py").write_text("from ..mid import b\n")
    layers = (("top",), ("mid", "mid2"), ("low",))
    graph = import_graph(pkg)
    assert upward_imports(graph, layers) == ["pkg.low.c -> pkg.mid2.d", "pkg.mid2.d -> pkg.mid.b"]
    (pkg / "low" / "c.py").write_text("def f():\n    pass\n")
    (pkg / "mid2" / "d.py").write_text("from ..low.c import f\n")
    assert upward_imports(import_graph(pkg), layers) == []


# --------------------------------------------------------------------------- the package

def test_every_module_lives_in_a_layer_folder():
    """No module flat in surf_dist/: each sits in one of ``LAYERS``, whose __init__ says in a
    docstring what the folder owns and what it may import."""
    folders = {folder for line in LAYERS for folder in line}
    stray = [m for m in module_files(PACKAGE) if m != "surf_dist" and folder_of(m) not in folders]
    assert stray == []
    for folder in folders:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{folder}/__init__.py: say what the folder owns and may import"


def test_no_folder_imports_a_higher_layer():
    graph = import_graph(PACKAGE)
    assert upward_imports(graph) == []
    assert "surf_dist.core.engine" in graph["surf_dist.core.train"]   # the reader reads

def test_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "surf_dist.core.train" in graph and "surf_dist.core.engine" in graph["surf_dist.core.train"]   # the reader reads
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_command_line():
    """``cli`` is the top: no module outside it imports it."""
    graph = import_graph(PACKAGE)
    assert [m for m, targets in graph.items() if folder_of(m) != "cli" and
            any(folder_of(t) == "cli" for t in targets)] == []


def test_experiments_stay_above_the_maths():
    """``commands/experiments/`` reaches the maths through ``evaluate``, ``descent_stats`` and ``jobs``."""
    below = ("surf_dist.comm", "surf_dist.methods.constraints", "surf_dist.problem.softmax", "surf_dist.core.engine",
             "surf_dist.cli")
    graph = import_graph(PACKAGE)
    experiments = {m: t for m, t in graph.items() if m.split(".")[:3] == ["surf_dist", "commands", "experiments"]}
    assert len(experiments) > 1
    reached = {m: sorted(t for t in targets if any(t == b or t.startswith(b + ".") for b in below))
               for m, targets in experiments.items()}
    assert {m: t for m, t in reached.items() if t} == {}


def test_distributed_imports_stay_in_comm_and_runtime():
    offenders = []
    for module, path in module_files(PACKAGE).items():
        if path.relative_to(PACKAGE).parts[0] in DISTRIBUTED_HOMES:
            continue
        for name, line in imported_names(module, path):
            if any(name == d or name.startswith(d + ".") for d in DISTRIBUTED_MODULES):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert offenders == []
    homes = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] in DISTRIBUTED_HOMES]
    seen = {name for p in homes for name, _ in imported_names("surf_dist.x", p)}
    assert {"torch.distributed", "ray"} <= seen   # they are there, so the check above can see them


def test_no_file_grows_past_the_limit():
    limit = MAX_LINES
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    offenders = [f"{name}: {n} lines" for name, n in sorted(sizes.items())
                 if n > OVER_MAX_LINES.get(name, limit)]
    assert offenders == [], f"files over {limit} lines (split them): {offenders}"
    stale = [name for name, cap in OVER_MAX_LINES.items() if sizes.get(name, 0) <= limit]
    assert stale == [], f"now at most {limit} lines or gone: drop {stale} from OVER_MAX_LINES"
