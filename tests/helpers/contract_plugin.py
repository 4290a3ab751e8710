"""A pytest plugin (``-p helpers.contract_plugin``) that registers a throwaway output format, so
that tests/test_contracts.py can show a new format gets the whole contract suite unedited, and
tests/test_format_options.py that a new format option (``demo_greeting``, declared here only)
reaches the settings, the command line, project files, ``lazyexport formats`` and the writer."""

from lazyexport.formats.npy import NpyWriter
from lazyexport.formats.options import Option
from lazyexport.formats.registry import register
from lazyexport.formats.spec import OutputSpec


def _greeting(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"give a non-empty text, got {value!r}")
    return value.strip()


DEMO_GREETING = Option(
    "demo_greeting",
    "a greeting in the plan",
    "a throwaway option: the plan notes this greeting (default hello)",
    "hello",
    check=_greeting,
    metavar="TEXT",
)


@register
class ContractNpyWriter(NpyWriter):
    name = "npy-contract"
    description = "a copy of npy, registered only by the contract suite's plugin test"
    options = (DEMO_GREETING,)

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        notes = super().check(spec)
        return (*notes, f"greeting: {spec.options['demo_greeting']}")
