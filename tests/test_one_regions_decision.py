"""One ``if regions`` decision in the package (issue 27): an export is a list of regions, and
only :func:`lazyexport.execution.regions.plan_exports` decides how many. Front ends (the API,
the command line, a batch project, napari, the ilastik flags) call the same two functions -
plan the jobs, run them - and never fork on ``settings.regions`` themselves.

Read from the source (not by importing it): every ``if``, conditional expression, ``while``,
``and``/``or``, ``assert`` and comprehension condition that reads an attribute ``regions``.

Not forks, so not counted:

- a refusal: an ``if`` whose body only raises (``preview shows one cutout``: a preview draws
  one plane of one cutout; ``a plan covers one region``): nothing else runs in its place;
- the command line's text (``args.regions``, the ``--regions`` flag) as it becomes settings;
- the one check of the value in settings (``None`` means no regions; a value is normalized).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "lazyexport"

THE_DECISION = ("execution/regions.py", "plan_exports")
# (file, function) -> why reading `.regions` there is no fork of the export path
ALLOWED = {
    ("settings.py", "_check_regions"): "normalizes the value (None: no regions); no path chosen",
}


def _reads_regions(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Attribute)
        and n.attr == "regions"
        and not (isinstance(n.value, ast.Name) and n.value.id == "args")
        for n in ast.walk(node)
    )


def _is_refusal(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and not node.orelse
        and all(isinstance(s, ast.Raise) for s in node.body)
    )


def _conditions(node: ast.AST) -> list[ast.AST]:
    """The conditions ``node`` branches on (none where it does not branch)."""
    if isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
        return [node.test]
    if isinstance(node, ast.BoolOp):
        return list(node.values)
    if isinstance(node, ast.comprehension):
        return list(node.ifs)
    return []


def regions_forks(tree: ast.AST, where: str) -> list[tuple[str, str, int]]:
    """``(file, function, line)`` of each line that branches on ``.regions`` in ``tree``
    (refusals left out; ``if a and b.regions`` counts once)."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        here = (where, function, getattr(node, "lineno", 0))
        conditions = _conditions(node)
        if not _is_refusal(node) and any(map(_reads_regions, conditions)) and here not in found:
            found.append(here)
        for child in ast.iter_child_nodes(node):
            if not (_is_refusal(node) and child is getattr(node, "test", None)):
                visit(child, function)

    visit(tree, "<module>")
    return found


def _package_forks() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        found += regions_forks(ast.parse(path.read_text(), str(path)), where)
    return found


def test_the_package_decides_regions_or_not_in_one_place():
    forks = _package_forks()
    decisions = [f for f in forks if f[:2] == THE_DECISION]
    others = [f for f in forks if f[:2] != THE_DECISION and f[:2] not in ALLOWED]
    assert len(decisions) == 1, decisions
    assert others == [], f"branches on .regions outside {THE_DECISION}: {others}"


def test_the_allow_list_is_used_and_small():
    forks = {f[:2] for f in _package_forks()}
    assert len(ALLOWED) <= 1
    assert set(ALLOWED) <= forks, "an allowed place no longer reads .regions: drop it"


def test_a_front_end_fork_is_found():
    code = """
def run(settings, args):
    if settings.regions:
        return export_regions(settings)
    plans = [plan(settings)] if not settings.regions else plan_regions(settings)
    many = settings.regions or [None]
    if args.regions:  # the flag's text
        pass
    if settings.regions:
        raise SettingsError("preview shows one cutout")
"""
    found = regions_forks(ast.parse(code), "front.py")
    assert [line for _, _, line in found] == [3, 5, 6]


def test_front_ends_call_the_same_two_functions():
    """The command line and a batch project plan and run through lazyexport.execution.fronts;
    neither calls the region-specific or single-export engine functions itself."""
    for name in ("cli.py", "batch.py"):
        tree = ast.parse((ROOT / name).read_text())
        called = {
            n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
        }
        assert {"plan_jobs", "run_jobs"} <= called, name
        assert not called & {"export_regions", "plan_regions", "plan_on", "execute"}, name
