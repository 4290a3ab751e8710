"""A resumable export's token names its added steps the same way in every process, so a
resume in a new process continues (a step class defined in a script used to be hashed by value,
differently in each process), and steps with other fields give other tokens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from helpers import cli_env

SCRIPT = """
import sys
import numpy as np
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.settings import ExportSettings
from lazyexport.steps import Step

class Flip(Step):
    def __init__(self, axis):
        self.axis = axis

    def apply(self, block, out_region, in_shape):
        return np.flip(block, self.axis)

settings = ExportSettings(format="zarr", output=sys.argv[2])
print(plan_token(build_plan(sys.argv[1], settings, steps=[Flip(int(sys.argv[3]))])))
"""


def _token(tmp_path: Path, axis: int) -> str:
    script = tmp_path / "flip_token.py"
    script.write_text(SCRIPT)
    args = [str(tmp_path / "src.npy"), str(tmp_path / "out.zarr"), str(axis)]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=True,
    )
    return done.stdout.strip()


def test_a_script_s_step_gives_the_same_token_in_every_process(tmp_path: Path) -> None:
    np.save(tmp_path / "src.npy", np.arange(4 * 8 * 8, dtype="uint16").reshape(4, 8, 8))
    first, second, other = _token(tmp_path, 0), _token(tmp_path, 0), _token(tmp_path, 1)
    assert first.startswith("r") and first == second
    assert other != first
