"""N5 sources (issue 13 item 17): every codec tensorstore writes is read and exported, and an
unsupported codec is refused by ``info`` with exit status 2. Each test failed before its fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import lazyexport as le
from lazyexport.cli import main

pytestmark = pytest.mark.usefixtures("small_blocks")


N5_CODECS = [
    {"type": "xz", "preset": 6},
    {"type": "bzip2", "blockSize": 9},
    {"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 2, "blocksize": 0},
    {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    {"type": "zstd", "level": 3},
    {"type": "gzip", "level": -1, "useZlib": True},
    {"type": "gzip", "level": 6, "useZlib": False},
    {"type": "raw"},
]


@pytest.mark.parametrize("codec", N5_CODECS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_item17_n5_sources_of_every_tensorstore_codec_read_and_export(tmp_path, codec):
    import tensorstore as ts

    data = np.arange(5 * 19 * 13, dtype=np.uint16).reshape(5, 19, 13) * 7
    ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "in.n5")},
            "path": "vol",
            "create": True,
            "metadata": {
                "dimensions": [13, 19, 5],
                "blockSize": [8, 8, 2],
                "dataType": "uint16",
                "compression": codec,
            },
        },
    ).result().write(data.transpose()).result()
    src = le.open_source(str(tmp_path / "in.n5/vol"))
    np.testing.assert_array_equal(src.values, data)
    np.testing.assert_array_equal(src[1:4, 3:17, 2:11].values, data[1:4, 3:17, 2:11])
    result = le.export(src, le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr")))
    np.testing.assert_array_equal(zarr.open_array(str(result.output), mode="r")[...], data)


def test_item17_an_unsupported_n5_codec_is_refused_by_info_with_exit_2(tmp_path, capsys):
    node = tmp_path / "lz4.n5"
    node.mkdir()
    (node / "attributes.json").write_text(
        json.dumps(
            {
                "n5": "4.0.0",
                "dimensions": [4, 4],
                "blockSize": [2, 2],
                "dataType": "uint8",
                "compression": {"type": "lz4", "blockSize": 65536},
            }
        )
    )
    assert main(["info", str(node)]) == 2
    err = capsys.readouterr().err
    assert "lz4" in err and len(err.strip().splitlines()) == 1
    assert (
        main(["export", str(node), "--format", "zarr", "--output", str(tmp_path / "o.zarr"), "-q"])
        == 2
    )
    assert not (tmp_path / "o.zarr").exists()
