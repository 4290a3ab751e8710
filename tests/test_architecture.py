"""The package's layering, read from its import statements (not by importing it).

Every ``import`` and ``from ... import`` counts wherever it stands: at module level, inside a
function, or under ``if TYPE_CHECKING``. ``from pkg import name`` imports the submodule
``pkg.name`` where there is one, else ``pkg`` itself; a package's ``__init__`` is the module
``pkg``. Only edges between lazyexport's own modules are kept.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "lazyexport"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# what the output formats must not depend on: the planner and everything that runs plans
ABOVE_FORMATS = {
    f"{PACKAGE}.{name}"
    for name in (
        *("plan", "plan_chunks", "plan_outputs", "plan_steps", "run", "batch", "batch_project"),
        *("cli", "cli_batch", "cli_options", "cli_output", "cli_settings", "preview"),
        *("execution", "execution.job", "execution.lazy", "execution.preflight"),
        *("execution.regions", "execution.staging", "execution.executors"),
        *("execution.results", "execution.schedulers"),
    )
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, whether it is a package's ``__init__``)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str) -> set[str]:
    """The lazyexport modules ``module`` imports, anywhere in its file."""
    path, is_package = MODULES[module]
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # the submodule where the name is one, else the module the name comes from
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found.update(m for m in map(_known, names) if m is not None and m != module)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _in(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) per strongly connected group of modules."""
    return sorted(_cycle_in(graph, group) for group in _groups(graph))


def _groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from the group's first module back to it, inside the group."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle in the strongly connected group {sorted(group)}")


def test_the_graph_is_read():
    assert f"{PACKAGE}.formats.zarr" in GRAPH[f"{PACKAGE}.formats"]
    assert f"{PACKAGE}.formats" in GRAPH[f"{PACKAGE}.plan"]
    assert f"{PACKAGE}.storage" in GRAPH[f"{PACKAGE}.formats.base"]


def test_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def _reached(start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or through others, with one chain of imports to
    it."""
    chains = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(GRAPH[node]):
            if nxt not in chains:
                chains[nxt] = chains[node] + [nxt]
                queue.append(nxt)
    return chains


def _imports_of(package: str, forbidden) -> list[str]:
    """For each module of ``package`` that imports (directly or not) a module ``forbidden``
    accepts: the shortest chain of imports that gets there."""
    wrong = []
    for module in sorted(m for m in GRAPH if _in(package, m)):
        chains = [
            chain
            for target, chain in _reached(module).items()
            if target != module and forbidden(target)
        ]
        if chains:
            shortest = min(chains, key=len)
            wrong.append(" -> ".join(shortest))
    return wrong


def test_formats_do_not_import_the_planner_or_what_runs_plans():
    wrong = _imports_of(f"{PACKAGE}.formats", lambda m: m in ABOVE_FORMATS)
    assert not wrong, "writers get an OutputSpec, not the plan: " + "; ".join(wrong)


def test_sources_do_not_import_formats():
    wrong = _imports_of(f"{PACKAGE}.sources", lambda m: _in(f"{PACKAGE}.formats", m))
    assert not wrong, "reading does not depend on writing: " + "; ".join(wrong)


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _private_uses(module: str) -> list[str]:
    """The private names (``_name``, not dunders) of other lazyexport modules that ``module``
    uses: imported by name, or read as an attribute of an imported lazyexport module."""
    path, is_package = MODULES[module]
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    bound: dict[str, str] = {}  # local name -> the lazyexport module it names
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    bound[alias.asname or alias.name] = full
                elif _known(base) and _private(alias.name) and _known(base) != module:
                    found.append(f"{module}: from {base} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and _private(node.attr)
        ):
            found.append(f"{module}: {bound[node.value.id]}.{node.attr}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_uses_another_modules_private_names():
    assert _private_uses(f"{PACKAGE}.plan") == []
    wrong = [use for module in sorted(MODULES) for use in _private_uses(module)]
    assert not wrong, "private names are the module's own: " + "; ".join(wrong)


def test_obstore_is_imported_only_by_the_storage_layer():
    users = sorted(
        module
        for module, (path, _) in MODULES.items()
        if not _in(f"{PACKAGE}.storage", module)
        and any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "obstore" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "obstore")
            for n in ast.walk(ast.parse(path.read_text(), str(path)))
        )
    )
    assert any(
        "obstore" in ast.dump(ast.parse(p.read_text()))
        for m, (p, _) in MODULES.items()
        if _in(f"{PACKAGE}.storage", m)
    )
    assert not users, "obstore belongs to lazyexport.storage: " + ", ".join(users)


def test_modules_a_reader_can_hold_in_mind():
    long = {m: n for m, (p, _) in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"modules over 600 lines: {long}"


# Modules outside lazyexport.storage that still ask "is this a URL?" themselves. This list must
# only shrink: a new question about a location becomes an operation or a capability of the
# storage layer (lazyexport.storage.paths, lazyexport.storage.capabilities), named by its use.
ASK_WHETHER_REMOTE: set[str] = set()  # (none left)
# the old names of the storage layer, which only re-export it
STORAGE_SHIMS = {f"{PACKAGE}.remote", f"{PACKAGE}.location"}


def _asks_whether_remote(path: Path) -> bool:
    """Whether the file calls ``is_url`` (under any name it is imported as) or checks
    ``isinstance(..., UrlPath)``."""
    tree = ast.parse(path.read_text(), str(path))
    names = {"is_url"} | {
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name == "is_url" and alias.asname
    }

    def called(func: ast.expr) -> str | None:
        if isinstance(func, ast.Name):
            return func.id
        return func.attr if isinstance(func, ast.Attribute) else None

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if called(node.func) in names:
            return True
        if called(node.func) == "isinstance" and len(node.args) == 2:
            kinds = ast.walk(node.args[1])
            if any(called(k) == "UrlPath" for k in kinds if isinstance(k, ast.expr)):
                return True
    return False


def test_writers_and_front_ends_do_not_ask_whether_a_location_is_remote():
    asking = {
        module
        for module, (path, _) in MODULES.items()
        if not _in(f"{PACKAGE}.storage", module)
        and module not in STORAGE_SHIMS
        and _asks_whether_remote(path)
    }
    assert asking <= ASK_WHETHER_REMOTE, (
        "ask the storage layer (an operation or a capability named by its use) instead of "
        "is_url / isinstance(..., UrlPath): " + ", ".join(sorted(asking - ASK_WHETHER_REMOTE))
    )
    assert asking == ASK_WHETHER_REMOTE, (
        "these no longer ask: take them off ASK_WHETHER_REMOTE, so that the list only shrinks: "
        + ", ".join(sorted(ASK_WHETHER_REMOTE - asking))
    )
    assert _asks_whether_remote(MODULES[f"{PACKAGE}.storage.paths"][0])


def _names_whether_remote(node: ast.AST) -> bool:
    """Whether ``node`` names ``is_url`` or is an ``isinstance(..., UrlPath)`` check."""
    if isinstance(node, ast.Name | ast.Attribute):
        return (node.id if isinstance(node, ast.Name) else node.attr) == "is_url"
    if isinstance(node, ast.alias):
        return node.name == "is_url" or node.asname == "is_url"
    if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance"):
        return False
    return len(node.args) == 2 and "UrlPath" in ast.unparse(node.args[1])


def test_sources_do_not_ask_whether_a_location_is_remote():
    wrong = sorted(
        f"{module}:{getattr(node, 'lineno', 0)}"
        for module, (path, _) in MODULES.items()
        if _in(f"{PACKAGE}.sources", module)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if _names_whether_remote(node)
    )
    assert not wrong, "the storage layer decides local or remote (storage.reading): " + ", ".join(
        wrong
    )
