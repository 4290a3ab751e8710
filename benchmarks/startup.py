"""Start-up of the ``lazyexport`` command: how long the commands that do little take, from the
process's start to its end (the interpreter's own start-up included), against the targets of
docs/performance.md: ``--version``, ``--help`` and ``formats`` < 0.3 s, ``info x.zarr`` < 0.8 s (a
small Zarr array the script makes). Each command runs ``--runs`` times (10 by default),
alternating between the commands, and the median is printed with the machine's load average
(the figures only mean something on a quiet machine), the interpreter's own start-up
(``python -c ''``), and the heavy libraries each command imported (``python -X importtime``).
``--against DIR`` times another checkout of lazyexport too (e.g. main), alternating run by run,
and prints its medians and the ratio beside each. The CPU time each command took (user + system,
median) is printed too: on a loaded machine it is close to what the command takes on a quiet
one. Bytecode is cached by a first run of each command (as after an install), even where
``PYTHONDONTWRITEBYTECODE`` is set.

    python benchmarks/startup.py [--runs 10] [--against ../main]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "dask", "xarray", "zarr", "h5py", "tifffile")


def commands(store: Path) -> dict[str, tuple[list[str], float]]:
    """Name -> (arguments, target seconds)."""
    return {
        "--version": (["--version"], 0.3),
        "--help": (["--help"], 0.3),
        "formats": (["formats"], 0.3),
        "info x.zarr": (["info", str(store)], 0.8),
    }


def make_store(where: Path) -> Path:
    import numpy as np
    import zarr

    store = where / "x.zarr"
    arr = zarr.create_array(str(store), shape=(8, 64, 64), chunks=(4, 64, 64), dtype="uint16")
    arr[:] = np.arange(8 * 64 * 64, dtype=np.uint16).reshape(8, 64, 64)
    return store


def _env(root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the first run caches the bytecode, as installed
    return env


def run_once(args: list[str], root: Path = ROOT) -> float:
    """Seconds of one ``lazyexport ARGS`` of the checkout ``root`` (``args`` empty: the
    interpreter alone, ``-c ''``)."""
    command = [sys.executable, "-m", "lazyexport", *args] if args else [sys.executable, "-c", ""]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=_env(root), cwd=root)
    seconds = time.perf_counter() - start
    CPU.append(_children_cpu())
    if done.returncode != 0:
        raise SystemExit(f"lazyexport {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return seconds


CPU: list[float] = [0.0]  # the children's CPU seconds so far, after each run


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def cpu_of_last_run() -> float:
    """CPU seconds (user + system) of the last :func:`run_once`."""
    return CPU[-1] - CPU[-2]


def heavy_imports(args: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lazyexport", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    found = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return [name for name in HEAVY if name in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--against", type=Path, help="another checkout to time alternately")
    options = parser.parse_args()
    runs, other = options.runs, options.against
    roots = [ROOT] + ([other.resolve()] if other else [])
    with tempfile.TemporaryDirectory(prefix="lazyexport-startup-") as temp:
        chosen = commands(make_store(Path(temp)))
        times: dict[str, list[float]] = {name: [] for name in [*chosen, "python"]}
        before: dict[str, list[float]] = {name: [] for name in chosen}
        cpu: dict[str, list[float]] = {name: [] for name in chosen}
        cpu_before: dict[str, list[float]] = {name: [] for name in chosen}
        for root in roots:
            for args, _ in chosen.values():
                run_once(args, root)  # compiled and cached once, as after an install
        load = os.getloadavg()[0]
        for _ in range(runs):
            times["python"].append(run_once([]))
            for name, (args, _) in chosen.items():
                times[name].append(run_once(args))
                cpu[name].append(cpu_of_last_run())
                if other:
                    before[name].append(run_once(args, roots[1]))
                    cpu_before[name].append(cpu_of_last_run())
        load = max(load, os.getloadavg()[0])
        print(f"lazyexport start-up, median of {runs} runs (load average up to {load:.1f}):")
        floor = statistics.median(times["python"])
        print(f"  the interpreter alone      {floor:6.3f} s  (python -c '')")
        for name, (args, target) in chosen.items():
            median = statistics.median(times[name])
            verdict = "meets" if median < target else "MISSES"
            heavy = heavy_imports(args)
            used = statistics.median(cpu[name])
            print(
                f"  lazyexport {name:12} {median:6.3f} s  (cpu {used:.3f} s; "
                f"target < {target} s: {verdict}; "
                f"imports {', '.join(heavy) or 'none of ' + '/'.join(HEAVY)})"
            )
            if other:
                then = statistics.median(before[name])
                print(
                    f"    {other}: {then:6.3f} s (cpu {statistics.median(cpu_before[name]):.3f} "
                    f"s; this checkout: x{then / median:.1f} faster)"
                )


if __name__ == "__main__":
    main()
