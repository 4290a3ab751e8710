"""Exports to an S3 server on loopback: lazyexport against ``dask.array.to_zarr`` and
``xarray.DataArray.to_zarr`` writing the same Zarr through zarr-python's ``ObjectStore``.

Workload: a float32 Zarr source on local disk (zyx, 2 GiB by default, chunks 16x256x256), the
cutout z=4:-4 (starts inside a chunk), renormalize [0, 1] -> [0, 255], uint8, written as Zarr v3
(zstd level 3, 16x256x256 chunks) to ``s3://bench/...`` on moto's S3 server (server mode, in
this process; each tool runs in a child process of its own). Runs alternate between the tools,
every output is read back and checked, and the ratios (tool seconds / lazyexport seconds: > 1
means lazyexport is faster) of the medians are printed. Absolute figures measure the loopback
server as much as the tools; the ratios are what to compare.

    python benchmarks/objstore.py [--mib 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench-out"
CHUNKS = (16, 256, 256)
CUT = (4, -4)
TOOLS = ("lazyexport", "dask", "xarray")


def make_source(mib: int, name: str = "objstore", depth_at_least: int = 16, **codecs) -> Path:
    """A float32 zyx Zarr of about ``mib`` MiB (1024x1024 planes, ``CHUNKS``), a smooth wave
    that compresses like microscopy, made once under bench-out/ and kept; ``codecs`` go to
    ``zarr.create_array`` (default: zarr's)."""
    import numpy as np
    import zarr

    depth = max(mib * 2**20 // (1024 * 1024 * 4), depth_at_least)
    path = OUT / f"{name}-source-{mib}MiB.zarr"
    if (path / "zarr.json").exists():
        return path
    arr = zarr.create_array(
        str(path), shape=(depth, 1024, 1024), chunks=CHUNKS, dtype="f4", overwrite=True,
        dimension_names=["z", "y", "x"], **codecs,
    )  # fmt: skip
    y, x = np.mgrid[0:1024, 0:1024].astype("f4") / 1024
    for z in range(0, depth, CHUNKS[0]):
        n = min(CHUNKS[0], depth - z)
        arr[z : z + n] = np.stack([(np.sin(6 * x + 0.1 * (z + i)) * y + 1) / 2 for i in range(n)])
    return path


def run_tool(tool: str, src: str, url: str) -> None:
    """One export (in a child process): what the user of each tool would write."""
    if tool == "lazyexport":
        import lazyexport as le

        le.export(
            src,
            le.ExportSettings(
                format="zarr", output=url, roi={"z": CUT}, renormalize=((0, 1), (0, 255)),
                dtype="uint8", chunks={"z": CHUNKS[0], "y": CHUNKS[1], "x": CHUNKS[2]},
            ),
        )  # fmt: skip
        return
    import dask.array as da
    import numpy as np
    import obstore.store
    import zarr
    from zarr.codecs import ZstdCodec
    from zarr.storage import ObjectStore

    store = ObjectStore(obstore.store.from_url(url))
    data = da.from_zarr(src)[CUT[0] : CUT[1]]
    data = da.clip(np.round(data * 255), 0, 255).astype("uint8").rechunk(CHUNKS)
    codecs = {"compressors": ZstdCodec(level=3)}
    if tool == "dask":
        arr = zarr.create_array(
            store, shape=data.shape, chunks=CHUNKS, dtype="uint8", dimension_names=["z", "y", "x"],
            **codecs,
        )  # fmt: skip
        da.store(data, arr, lock=False)
    else:
        import xarray as xr

        xr.DataArray(data, dims=("z", "y", "x"), name="data").to_zarr(
            store, mode="w", encoding={"data": codecs}, consolidated=False, zarr_format=3
        )


def check(url: str, expected_shape: tuple[int, ...]) -> None:
    import obstore.store
    import zarr
    from zarr.storage import ObjectStore

    node = zarr.open(ObjectStore(obstore.store.from_url(url), read_only=True), mode="r")
    arr = node if isinstance(node, zarr.Array) else node["data"]
    assert arr.shape == expected_shape and arr.dtype == "uint8", (arr.shape, arr.dtype)
    assert int(arr[arr.shape[0] // 2].max()) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "SRC", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        run_tool(*args.child)
        print(json.dumps({"seconds": time.perf_counter() - start}))
        return

    import logging

    import boto3
    import zarr
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    src = make_source(args.mib)
    shape = zarr.open_array(str(src), mode="r").shape
    expected = (shape[0] + CUT[1] - CUT[0], *shape[1:])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ALLOW_HTTP": "true",
    }
    client = boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench",
        aws_secret_access_key="bench", region_name="us-east-1",
    )  # fmt: skip
    client.create_bucket(Bucket="bench")
    os.environ.update(env)
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    print(f"source {src.name}: {shape} float32, cut z={CUT[0]}:{CUT[1]} -> uint8 Zarr on S3")
    try:
        for round_ in range(args.repeats):
            order = TOOLS[round_ % 3 :] + TOOLS[: round_ % 3]
            for tool in order:
                url = f"s3://bench/{tool}-{round_}.zarr"
                done = subprocess.run(
                    [sys.executable, __file__, "--child", tool, str(src), url],
                    env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if done.returncode:
                    raise SystemExit(f"{tool} failed:\n{done.stderr}")
                seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                check(url, expected)
                times[tool].append(seconds)
                print(f"  round {round_ + 1} {tool:10s} {seconds:6.2f} s", flush=True)
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket="bench", Prefix=f"{tool}-{round_}.zarr"
                )
                for page in pages:
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        client.delete_objects(Bucket="bench", Delete={"Objects": keys})
    finally:
        server.stop()
    mine = statistics.median(times["lazyexport"])
    print(f"median lazyexport {mine:.2f} s")
    for tool in TOOLS[1:]:
        theirs = statistics.median(times[tool])
        ratio = theirs / mine
        print(f"median {tool:10s} {theirs:.2f} s   ratio {ratio:.2f}x (> 1: lazyexport faster)")


if __name__ == "__main__":
    main()
