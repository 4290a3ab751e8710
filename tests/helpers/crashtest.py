"""SIGKILL campaign: real ``lazyexport export --resume`` runs killed at random moments, for every
registered format, each followed by the next run.

    python tests/helpers/crashtest.py [--kills 10] [--formats zarr,...] [--seed 1]  (make crashtest)

Per kill, in a fresh directory: start the export in a subprocess (blocks of 64 KiB, so it runs
as dozens of tasks), SIGKILL it (one in five at a random moment of its start-up, the others a
random time after its first temporary file appears, up to 1.1 times a clean run's writes; the
table says where each landed), then check what it left:

- a finished-looking output is right: if every final path exists, it equals a clean export;
- a partly renamed output only with its commit record beside it (an interrupted commit);

then run the same command again (``--resume``: resumable formats continue, the others start
again) and check that it exits 0, that the output equals a clean export, and that no temporary,
journal or commit record is left. tests/test_crash.py runs a bounded sample of this in
``make test``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (48, 256, 256)
BLOCK_BYTES = 64 * 2**10


def output_name(fmt: str) -> str:
    import lazyexport as le

    return "out_{slice_index}" if le.formats.get_writer(fmt).capabilities.sequence else "out"


def command(fmt: str, directory: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lazyexport",
        "export",
        str(directory / "v.npy"),
        "--format",
        fmt,
        "--output",
        str(directory / output_name(fmt)),
        "--resume",
        "--quiet",
        "--chunks",
        "z=1",
    ]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LAZYEXPORT_MAX_BLOCK_BYTES"] = str(BLOCK_BYTES)
    return env


def prepare(directory: Path) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    data = (
        (np.arange(np.prod(SHAPE), dtype=np.uint64) * 40503 % 65521)
        .astype(np.uint16)
        .reshape(SHAPE)
    )
    np.save(directory / "v.npy", data)
    return data


def finals(fmt: str, directory: Path) -> tuple[list[Path], str]:
    """The final paths an export of ``fmt`` into ``directory`` writes, and what to open to read
    it."""
    import lazyexport as le

    plan = le.plan(
        str(directory / "v.npy"),
        le.ExportSettings(format=fmt, output=str(directory / output_name(fmt)), chunks={"z": 1}),
    )
    paths = [Path(p) for p in plan.paths]
    readable = str(plan.output) + (f"/{plan.internal}" if plan.internal else "")
    return paths, readable


def read(fmt: str, paths: list[Path], readable: str) -> np.ndarray:
    import lazyexport as le

    if le.formats.get_writer(fmt).capabilities.sequence:
        return np.asarray(le.open_exported([str(p) for p in paths])).reshape(SHAPE)
    return np.asarray(le.open_exported(readable)).reshape(SHAPE)


def leftovers(directory: Path) -> list[str]:
    """lazyexport's hidden temporaries, journals and commit records below ``directory``."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*.lazyexport-*"))


def kill_once(fmt: str, directory: Path, data: np.ndarray, delay: float, in_writes: bool) -> str:
    """One kill and the run after it; returns where the kill landed, raises AssertionError on a
    broken promise. The kill comes ``delay`` seconds after the start, or (``in_writes``) after
    the export's first temporary file appears."""
    paths, readable = finals(fmt, directory)
    proc = subprocess.Popen(
        command(fmt, directory),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None  # a pipe
    if in_writes:
        give_up = time.monotonic() + 120
        while not leftovers(directory) and proc.poll() is None and time.monotonic() < give_up:
            time.sleep(0.005)
    try:
        proc.wait(timeout=delay)
        landed = "after the end"
        assert proc.returncode == 0, f"the run failed before the kill: {proc.stderr.read()[-800:]}"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = leftovers(directory)
        landed = (
            "commit record left"
            if any(".commit" in p for p in left)
            else "temporaries left"
            if left
            else "nothing left"
        )
    existing = [p for p in paths if p.exists()]
    if existing and len(existing) == len(paths):
        if not any(".commit" in p for p in leftovers(directory)):  # finished-looking: must be right
            assert np.array_equal(read(fmt, paths, readable), data), (
                f"{fmt}: a finished-looking output is wrong"
            )
    elif existing:
        assert any(".commit" in p for p in leftovers(directory)), (
            f"{fmt}: {len(existing)} of {len(paths)} final paths exist without a commit record"
        )
    proc.stderr.close()
    again = subprocess.run(
        command(fmt, directory), env=environment(), capture_output=True, text=True, timeout=300
    )
    if again.returncode == 2 and "exists already" in again.stderr:  # the killed run had finished
        assert np.array_equal(read(fmt, paths, readable), data)
    else:
        assert again.returncode == 0, f"{fmt}: the run after the kill failed: {again.stderr[-800:]}"
    assert np.array_equal(read(fmt, paths, readable), data), (
        f"{fmt}: the run after the kill wrote a wrong output"
    )
    assert leftovers(directory) == [], f"{fmt}: left after the next run: {leftovers(directory)}"
    return landed


def clean_seconds(fmt: str, directory: Path) -> tuple[float, float]:
    """Seconds of a clean run's start-up and planning (a ``--plan`` run), and of the whole run."""
    start = time.monotonic()
    done = subprocess.run(
        [*command(fmt, directory), "--plan"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-800:]
    planned = time.monotonic()
    done = subprocess.run(
        command(fmt, directory), env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-800:]
    return planned - start, time.monotonic() - planned


def campaign(
    formats: list[str], kills: int, seed: int, root: Path, timed: bool = True
) -> dict[str, dict[str, int]]:
    """``kills`` kills per format; returns, per format, how many landed where. Without ``timed``
    (the bounded sample in ``make test``) no clean run is timed: every kill comes within half a
    second of the first temporary file."""
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {}
    for fmt in formats:
        startup, whole = 1.0, 1.5
        if timed:
            timing = root / f"{fmt}-clean"
            prepare(timing)
            startup, whole = clean_seconds(fmt, timing)
            shutil.rmtree(timing)
        counts[fmt] = {}
        for k in range(kills):
            directory = root / f"{fmt}-{k}"
            data = prepare(directory)
            # most kills land in the export's writes and commit, some in start-up or after the end
            if timed and rng.random() < 0.2:
                landed = kill_once(fmt, directory, data, rng.uniform(0.1, startup), in_writes=False)
            else:
                landed = kill_once(
                    fmt, directory, data, rng.uniform(0.0, 1.1) * (whole - startup), in_writes=True
                )
            counts[fmt][landed] = counts[fmt].get(landed, 0) + 1
            shutil.rmtree(directory)
    return counts


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import lazyexport as le

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per format (default 10)")
    parser.add_argument("--formats", default=",".join(le.formats.formats()))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crashtest-") as root:
        counts = campaign(args.formats.split(","), args.kills, args.seed, Path(root))
    places = ["nothing left", "temporaries left", "commit record left", "after the end"]
    print(f"{'format':14} {'kills':>5}  " + "  ".join(f"{p:>18}" for p in places))
    for fmt, where in counts.items():
        print(
            f"{fmt:14} {sum(where.values()):>5}  "
            + "  ".join(f"{where.get(p, 0):>18}" for p in places)
        )
    print(
        f"all {sum(sum(w.values()) for w in counts.values())} kills kept every promise "
        f"(seed {args.seed})"
    )


if __name__ == "__main__":
    main()
