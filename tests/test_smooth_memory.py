"""The planner's memory of a smoothing block: what a task holds is counted once.

A smoothing task holds its block's source region (the block and its halo), the first pass's
array of the same shape in float32 (the other passes work in it; the result is a view of it)
and the result made contiguous, which is the task's block. Counting the result again (as the
step's output and as a contiguous copy) made the planner pick smaller blocks than the budget
allows, and smaller blocks decode the chunks their halos reach more often.
"""

from __future__ import annotations

from helpers import make_data, write_zarr3
from lazyexport import ExportSettings
from lazyexport.plan import build_plan
from lazyexport.step_smooth import radius


def test_a_smoothing_task_holds_its_region_its_first_pass_and_its_block(tmp_path):
    data = make_data("float32", (16, 1536, 256))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(8, 128, 128))
    settings = ExportSettings(smooth={"y": 2}, format="zarr", output=str(tmp_path / "out.zarr"))
    plan = build_plan(src.spec, settings, memory_limit="16MiB", threads=2)
    costs = plan.priced
    bz, by, bx = costs.block[:3]
    assert 3 * by <= 1536  # a block in the middle has its whole halo
    first_pass = bz * (by + 2 * radius(2)) * bx * 4
    assert costs.out == bz * by * bx * 4
    assert costs.transform == first_pass
    assert costs.task_peak == costs.out + costs.piece_bytes + costs.read_extra + first_pass
