"""Lists in the docs that must name everything (issue 13 item 25): the usage format table and the
README's format comment list every format, and the batch docs every settings key. Each test
failed before its fix.
"""

from __future__ import annotations

import dataclasses
import re

import lazyexport as le
from helpers import ROOT
from lazyexport.formats import formats


def _table_formats(text: str) -> set[str]:
    section = text.split("## Formats", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE))


def test_item25_usage_format_table_lists_every_format():
    assert _table_formats((ROOT / "docs" / "usage.md").read_text()) == set(formats())


def test_item25_readme_format_comment_lists_every_format():
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.strip().startswith("format="))
    listed = {name.strip() for name in line.split("#", 1)[1].split("|")}
    assert listed == set(formats()), line


def test_item25_batch_docs_list_every_settings_key():
    text = (ROOT / "docs" / "batch.md").read_text()
    keys = text.split("`[settings]` keys are the fields of `ExportSettings`:", 1)[1].split(
        "\n- ", 1
    )[0]
    listed = set(re.findall(r"`([a-z][a-z_]*)`", keys))
    assert listed == {f.name for f in dataclasses.fields(le.ExportSettings)}
