"""Typed reads of zarr nodes for the tests.

zarr-python types `group[name]` as `Array | Group`, a read `array[...]` as any array-like or
scalar and `node.attrs` values as any JSON. A test knows which it reads; these helpers say so to
mypy. Invariant: at run time each is the plain zarr access, plus an isinstance assertion where
the test already relies on the node being an array (of Zarr v2 / v3); nothing is copied or
converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata


def as_array(node: Any) -> zarr.Array:
    """`node` (a group member or an opened node), asserted to be an array."""
    assert isinstance(node, zarr.Array), type(node)
    return node


def read_all(node: Any) -> npt.NDArray[Any]:
    """All of array `node` read as the numpy array zarr returns for `node[...]`."""
    return read(node, ...)


def read(node: Any, selection: Any) -> npt.NDArray[Any]:
    """`node[selection]` of array `node` (a selection of at least one axis: an array, no scalar)."""
    return cast("np.ndarray[Any, Any]", as_array(node)[selection])


def zarr_attrs(node: zarr.Array | zarr.Group) -> Mapping[str, Any]:
    """The attributes of `node`, their JSON values typed as whatever the test reads from them."""
    return cast("Mapping[str, Any]", node.attrs)


def v3_metadata(node: Any) -> ArrayV3Metadata:
    """The metadata of array `node`, asserted to be Zarr v3's (which has dimension names)."""
    metadata = as_array(node).metadata
    assert isinstance(metadata, ArrayV3Metadata), type(metadata)
    return metadata


def v2_metadata(node: Any) -> ArrayV2Metadata:
    """The metadata of array `node`, asserted to be Zarr v2's (which has a dimension separator)."""
    metadata = as_array(node).metadata
    assert isinstance(metadata, ArrayV2Metadata), type(metadata)
    return metadata


def dimension_names(node: Any) -> tuple[str | None, ...]:
    """The dimension names of Zarr v3 array `node`, asserted to be set."""
    names = v3_metadata(node).dimension_names
    assert names is not None, node
    return names
