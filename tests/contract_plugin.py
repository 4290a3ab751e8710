"""A pytest plugin (``-p contract_plugin``) that registers a throwaway output format, so that
tests/test_contracts.py can show a new format gets the whole contract suite unedited."""

from lazyexport.formats.npy import NpyWriter
from lazyexport.formats.registry import register


@register
class ContractNpyWriter(NpyWriter):
    name = "npy-contract"
    description = "a copy of npy, registered only by the contract suite's plugin test"
