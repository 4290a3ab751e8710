"""Who runs a ``--resume`` export: one owner record per place it writes temporaries, at any
location, claimed and released the same way on every backend.

A run's owner records are keys (:func:`lazyexport.resume.owner_paths` names them: an owner file
beside the outputs in each directory, or the owner key of the run's held prefix in an object
store); each is created with the backend's atomic ``put_new``
(:func:`~lazyexport.storage.runs.claim_key`), so of runs starting at once exactly one wins.

Invariants: a claim of several records makes all or none (those made are removed when one is
refused); releasing removes the records and never raises (a record left by a failed release
names a process that has ended, which the next run takes over as an orphan's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import PurePath

from .resolve import backend_at
from .runs import claim_key
from .urls import UrlPath


def claim(owners: Sequence[PurePath | UrlPath], token: str) -> None:
    """Make this process the owner of the ``--resume`` run ``token`` at every record in
    ``owners``; raise :class:`~lazyexport.storage.runs.Busy` if a live process (or one on
    another host: nobody here can tell) owns any of them, after removing those made."""
    made: list[PurePath | UrlPath] = []
    try:
        for owner in owners:
            claim_key(*backend_at(owner), token)
            made.append(owner)
    except BaseException:
        release(made)
        raise


def release(owners: Sequence[PurePath | UrlPath]) -> None:
    """Remove this run's owner records (see the module's invariants)."""
    for owner in owners:
        with contextlib.suppress(Exception):
            backend, key = backend_at(owner)
            backend.delete(key)
