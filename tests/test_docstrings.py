"""The public API's docstrings follow numpydoc: every parameter documented under its own name,
returns and raises sections where they apply, a one-line summary (checked by numpydoc's own
validator, so a renamed or added parameter without documentation fails here)."""

from __future__ import annotations

import pytest
from numpydoc.validate import validate

import lazyexport

# Sections a short API may leave out: See Also, Examples, an extended summary.
OPTIONAL = {"SA01", "EX01", "ES01"}

BATCH_METHODS = ["load", "save", "plan", "list", "export", "export_all", "clean", "delete_all"]


def public_names() -> list[str]:
    names = []
    for name in lazyexport.__all__:
        obj = getattr(lazyexport, name)
        names.append(f"{obj.__module__}.{obj.__qualname__}")
    names += [f"lazyexport.batch.Batch.{m}" for m in BATCH_METHODS]
    return names


def test_the_list_covers_every_public_name():
    assert {"export", "plan", "preview", "ExportSettings", "Batch"} <= set(lazyexport.__all__)
    assert all(callable(getattr(lazyexport.Batch, m)) for m in BATCH_METHODS)


@pytest.mark.parametrize("name", public_names())
def test_public_docstring_is_numpydoc(name):
    errors = [f"{code}: {text}" for code, text in validate(name)["errors"] if code not in OPTIONAL]
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_the_validator_catches_an_undocumented_parameter():
    def sample(source, extra):
        """Export something.

        Parameters
        ----------
        source : str
            What to export.

        Returns
        -------
        int
            Nothing much.
        """
        return 0

    sample.__module__ = __name__
    globals()["sample"] = sample
    codes = {code for code, _ in validate(f"{__name__}.sample")["errors"]}
    assert "PR01" in codes  # ``extra`` is not documented
