"""A bounded sample of the SIGKILL campaign (tests/helpers/crashtest.py; ``make crashtest``
runs ten kills per format): one real export per registered format killed during its writes, then the
next ``--resume`` run. Nothing finished-looking is ever wrong, nothing is left behind, and the
output equals a clean export."""

from __future__ import annotations

import pytest

import lazyexport as le
from helpers import crashtest


@pytest.mark.slow
def test_a_killed_export_of_every_format_leaves_nothing_wrong_and_the_next_run_finishes(tmp_path):
    counts = crashtest.campaign(le.formats.formats(), kills=1, seed=7, root=tmp_path, timed=False)
    assert set(counts) == set(le.formats.formats())
    assert sum(sum(where.values()) for where in counts.values()) == len(counts)
