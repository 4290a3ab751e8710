"""The light table ``lazyexport formats`` prints without importing a writer
(:mod:`lazyexport.format_table`) is what the registered writers declare."""

from __future__ import annotations

from lazyexport.format_table import FORMATS, row_of, rows, table
from lazyexport.formats import formats, get_writer


def test_the_table_is_the_registry():
    assert FORMATS == tuple(row_of(get_writer(name)) for name in formats())


def test_once_the_writers_are_imported_the_registry_is_listed(monkeypatch):
    from lazyexport.formats import registry

    writer = type(get_writer("npy"))
    plugin = type("PluginWriter", (writer,), {"name": "npy-plugin"})
    monkeypatch.setitem(registry._WRITERS, "npy-plugin", plugin)
    listed = rows()
    assert [r.name for r in listed] == sorted([*(r.name for r in FORMATS), "npy-plugin"])
    assert any(line.startswith("npy-plugin ") for line in table(listed))
