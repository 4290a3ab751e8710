"""One registry of format declarations (:mod:`lazyexport.declarations`): every built-in writer's
name, extensions, description, capabilities and options are its declaration's own objects
(identity, not equality), no writer module declares them again, and ``lazyexport formats``
lists the declarations without importing a writer, or the registry once it is imported."""

from __future__ import annotations

import ast
import inspect
import sys

import pytest

from helpers import ROOT
from lazyexport.declarations import FORMATS, Capabilities, Format, Option
from lazyexport.format_table import rows, table
from lazyexport.formats import formats, get_writer
from lazyexport.formats.base import DECLARED, Writer


def test_the_registry_registers_exactly_the_declared_formats():
    assert formats() == list(FORMATS) == sorted(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_writer_takes_its_declaration_itself(name):
    writer = get_writer(name)
    declaration = FORMATS[name]
    assert type(writer).declaration is declaration
    for key in DECLARED:
        assert getattr(writer, key) is getattr(declaration, key), key
    assert writer.capabilities.declared == {o.name for o in declaration.options}
    assert writer.capabilities.declared <= writer.capabilities.options


def _declares(cls: type) -> set[str]:
    """The declaration attributes ``cls``'s own source assigns in its class body."""
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    found: set[str] = set()
    for node in body.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        found.update(t.id for t in targets if isinstance(t, ast.Name))
    return found & {*DECLARED, "declaration"}


def test_no_writer_class_declares_again():
    """Each built-in writer class (and every class it inherits from below Writer) assigns its
    declaration and nothing of what the declaration gives."""
    for name in FORMATS:
        cls = type(get_writer(name))
        assert _declares(cls) == {"declaration"}, cls
        for base in cls.__mro__[1 : cls.__mro__.index(Writer)]:
            assert not _declares(base) - {"declaration"}, base


def test_a_writer_class_that_names_a_declaration_and_declares_again_is_refused():
    with pytest.raises(TypeError, match="^Again sets description, which its declaration gives"):

        class Again(Writer):
            declaration = FORMATS["npy"]
            description = "a second description"


def test_no_format_module_makes_a_declaration():
    """Capabilities, options and formats are made in lazyexport/declarations.py only (the base
    Writer has default Capabilities, and makes a plugin class's Format from what it sets)."""
    made = {}
    for path in sorted((ROOT / "lazyexport" / "formats").glob("*.py")):
        calls = {
            node.func.id
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        made[path.name] = calls & {"Capabilities", "Option", "Format", "one_of"}
    assert made.pop("base.py") == {"Capabilities", "Format"}
    assert not any(made.values()), made


def test_a_writer_that_sets_its_attributes_gets_one_declaration_from_them():
    """A plugin's format (or a variant of a writer) declares on its class: its declaration is
    made from that, and a variant keeps its base's other declarations."""
    option = Option("demo_word", "a word", "a word")

    class Variant(type(get_writer("npy"))):  # type: ignore[misc]
        name = "npy-variant"
        options = (option,)

    declared = Variant.declaration
    assert declared.name == "npy-variant" and declared.options == (option,)
    assert declared.extensions is FORMATS["npy"].extensions
    assert Variant.capabilities is declared.capabilities
    assert Variant.capabilities.options == {"demo_word"} == Variant.capabilities.declared
    assert type(get_writer("npy")).declaration is FORMATS["npy"]  # the base keeps its own


def test_a_format_reads_the_options_it_declares():
    option = Option("demo_level", "a level", "a level")
    made = Format("demo", (".d",), "", Capabilities(options=frozenset({"unit"})), (option,))
    assert made.capabilities.options == {"unit", "demo_level"}
    assert made.capabilities.declared == {"demo_level"}
    with pytest.raises(ValueError, match="unknown format options"):
        Capabilities(options=frozenset({"demo_level"}))


def test_the_table_lists_the_declarations_or_the_registry(monkeypatch):
    from lazyexport.formats import registry

    assert rows() == tuple(FORMATS.values())  # the registry's: the same objects
    assert all(a is b for a, b in zip(rows(), FORMATS.values()))
    plugin = type("PluginWriter", (type(get_writer("npy")),), {"name": "npy-plugin"})
    monkeypatch.setitem(registry._WRITERS, "npy-plugin", plugin)
    listed = rows()
    assert [r.name for r in listed] == sorted([*FORMATS, "npy-plugin"])
    assert any(line.startswith("npy-plugin ") for line in table(listed))
    monkeypatch.delitem(sys.modules, "lazyexport.formats")
    assert rows() == tuple(FORMATS.values())  # without the writers: the declarations
